"""Asking from inside an actor: the :func:`ask` effect and the :class:`AskTimedOut` intent.

An actor's ``ask(intent, timeout=...)`` never blocks its partition. The request goes out as
an ordinary emit whose context names the asking actor as ``reply_to`` (its topic) and
``requester`` (its id), and whose intent id is the ask's id; a durable timer is set for
the timeout. The callee answers with ``reply(...)``, which the engine routes to the asker's
topic keyed by its id: the answer comes back as a message of the asker, handled in the
context of the message that asked (so the asker can ``reply`` to whoever asked *it*: a
cycle of asks completes). If no answer comes in time, the asker gets an
:class:`AskTimedOut` instead; an answer after that (or one no ask is waiting for) is
dropped and counted. Pure declarations: the runtime is in ``agent.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from packetflow.core.effects import Effect
from packetflow.core.intent import Intent


@dataclass(frozen=True, slots=True)
class Ask(Effect):
    """Send ``intent`` as a request; its answer (or :class:`AskTimedOut`) comes back later."""

    intent: Intent
    timeout: float = 10.0
    topic: str | None = None  # default: where the intent's type is routed


def ask(intent: Intent, *, timeout: float = 10.0, topic: str | None = None) -> Ask:
    """An actor's non-blocking ask (see the module docstring); ``timeout`` in seconds."""
    if timeout <= 0:
        raise ValueError(f"ask timeout must be positive, not {timeout}")
    return Ask(intent, timeout, topic)


class AskTimedOut(Intent, type_name="packetflow.actors.AskTimedOut", key="actor", internal=True):
    """No answer came to an actor's ask within its timeout (sent by the engine to the
    asking actor, in the context of the message that asked)."""

    actor: str  # the asking actor's id
    ask_id: str  # the request's intent id
    request: str  # the request's intent type
    timeout: float  # seconds
