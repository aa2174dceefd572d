"""Supervisors: actors that decide for the actors of a group when one of them fails.

An actor type declared with ``supervisor="fleet"`` escalates a failure (its policy is
``escalate()``, or ``restart`` past ``max_restarts``) to the ``fleet`` actor whose id is the
failed actor's group: the part of its id before the type's group separator (``group="/"``:
actor ``"g1/a"`` is in group ``"g1"``; with no separator, the type's name). The failed
actor's messages wait in its stash; the supervisor gets an :class:`Escalated` message and
answers with :func:`decide`: ``restart`` (replay the stash after the backoff), ``resume``
(set the failed message aside, go on) or ``stop``, for that actor alone (one-for-one) or
for every actor of its group (one-for-all: a group's actors share a partition, since their
records are partitioned by the group, so the decision is carried out there at once).
Both messages are internal intents: only a worker can send them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packetflow.core.effects import Effect
from packetflow.core.intent import Intent

Decision = Literal["restart", "resume", "stop"]


class Escalated(Intent, type_name="packetflow.actors.Escalated", key="supervisor", internal=True):
    """An actor failed and its type escalates: sent by the engine to its supervisor, in
    the context of the failed message."""

    supervisor: str  # the supervisor actor's id: the failed actor's group
    actor_type: str
    actor: str
    topic: str  # logical: where the failed actor's messages go
    failure: str  # the exception, one line
    cause: str  # "escalate" (its policy) or "max-restarts" (restart gave up)
    message_type: str  # the failed message's intent type


class Supervise(Intent, type_name="packetflow.actors.Supervise", key="actor", internal=True):
    """A supervisor's decision, sent by the engine to the failed actor's topic."""

    actor_type: str
    actor: str
    decision: Decision
    group_wide: bool = False  # one-for-all
    supervisor: str
    failure: str


@dataclass(frozen=True, slots=True)
class Decide(Effect):
    """A supervisor's answer to an :class:`Escalated` (see :func:`decide`)."""

    escalated: Escalated
    decision: Decision
    group_wide: bool = False


def decide(escalated: Escalated, decision: Decision, *, one_for_all: bool = False) -> Decide:
    """Restart, resume or stop the actor that escalated ``escalated``, or with
    ``one_for_all`` every actor of its group (restart: they all wait out the backoff and go
    on together; stop: they all stop; resume: only the failed one has anything to resume)."""
    if decision not in ("restart", "resume", "stop"):
        raise ValueError(f"decision must be restart, resume or stop, not {decision!r}")
    return Decide(escalated, decision, one_for_all)
