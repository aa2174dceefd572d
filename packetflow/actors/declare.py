"""Declaring an actor type on a topology: :func:`actor`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from packetflow.actors.agent import ASKS, REMINDERS, SUPERVISION, ActorSpec, takes_id
from packetflow.actors.operate import ActorControl
from packetflow.actors.supervision import Supervision
from packetflow.actors.supervisors import Escalated, Supervise
from packetflow.core.intent import Intent, intent_types_of
from packetflow.core.reactor import StateSpec
from packetflow.core.replies import Refused
from packetflow.engine.agent import StoreDecl
from packetflow.engine.topology import Topology, TopologyError

F = TypeVar("F", bound=Callable[..., Any])


def actor(
    topology: Topology,
    handles: Any,
    *,
    state: Any,
    topic: str | None = None,
    supervision: Supervision | None = None,
    emits: Iterable[type[Intent]] = (),
    name: str | None = None,
    partitions: int | None = None,
    public: bool = False,
    supervisor: str | None = None,
    group: str | None = None,
    passivate_after: float | None = None,
    max_active: int | None = None,
) -> Callable[[F], F]:
    """Declare an actor type whose function handles ``handles`` (an intent class or a union
    of them, taken apart with ``match``) for one actor at a time.

    An actor is addressed by its id, the key of its messages (the intents' ``key`` field),
    and exists because it has one: nothing creates or places it. The function takes
    ``(message, ctx, state)`` or ``(message, ctx, state, actor_id)`` (``state``: a pydantic
    model class, or any JSON-able initial value, as for a stateful reactor) and returns
    ``(new_state, effects)``; ``None`` as the new state ends the actor. Besides the engine's
    effects it may return :func:`ask`, :func:`remind` and :func:`forget`. Messages go to
    ``topic`` (default: the actor type's name), every handled type routed there, so
    ``Client.send`` / ``packetflow send`` of one of them is a tell and ``Client.ask`` an
    ask (answered with ``reply(...)``; name what it replies with and sends in ``emits``, so
    clients can decode it). ``supervision``
    (default :func:`~packetflow.actors.restart`) decides what a failed message leads to;
    ``supervisor`` names an actor type declared before this one that handles
    :class:`~packetflow.actors.Escalated` (failures go to it under ``escalate()``, or past
    ``max_restarts``), and ``group`` a separator: an actor's group (its supervisor's id) is
    its id up to it, and a group's messages share a partition. Every supervision decision
    is a record on ``<topology>.supervision``. ``passivate_after`` (seconds idle) and
    ``max_active`` (per worker) make actors leave memory; their next message brings them
    back from the store (with the disk store their values leave its cache; the memory store
    keeps every value in memory by nature). Capabilities are the intents' own, checked
    on every message as for a reactor.
    """
    # every actor type also takes an operator's commands, Refused (the engine's answer to
    # one of its asks that was set aside: denied, dead-lettered) and its supervisor's
    # decisions
    types: tuple[type[Intent], ...] = (
        *intent_types_of(handles),
        ActorControl,
        Refused,
        Supervise,
    )

    def register(fn: F) -> F:
        actor_name = name or fn.__name__
        doc = (fn.__doc__ or "").strip().splitlines()
        try:
            takes_id(fn)
            boss = _supervisor(topology, supervisor, supervision)
            if group is not None and not group:
                raise ValueError("group must be a non-empty separator, such as '/'")
            if passivate_after is not None and passivate_after <= 0:
                raise ValueError("passivate_after must be a positive number of seconds")
            if max_active is not None and max_active < 1:
                raise ValueError("max_active must be at least 1")
            spec = ActorSpec(
                name=actor_name,
                topic=topic or actor_name,
                intent_types=types,
                fn=fn,
                supervision=supervision or Supervision(),
                emits=tuple(emits),
                stores=(StoreDecl("", StateSpec.of(state)), SUPERVISION, ASKS, REMINDERS),
                description=doc[0] if doc else "",
                public=public,
                records_topic=f"{topology.name}.supervision",
                supervisor=supervisor,
                supervisor_topic=boss.topic if boss is not None else None,
                key_group=group,
                passivate_after=passivate_after,
                max_active=max_active,
            )
        except ValueError as exc:
            raise TopologyError(f"actor {actor_name}: {exc}") from None
        topology.add_agent(spec, partitions)
        return fn

    return register


def _supervisor(
    topology: Topology, name: str | None, supervision: Supervision | None
) -> ActorSpec | None:
    """The supervisor actor type named ``name``, checked."""
    if name is None:
        if supervision is not None and supervision.strategy == "escalate":
            raise ValueError("escalate() needs a supervisor: actor(..., supervisor='name')")
        return None
    spec = topology.agents.get(name)
    if not isinstance(spec, ActorSpec):
        raise ValueError(f"supervisor {name!r} is not an actor type declared before this one")
    if Escalated not in spec.intent_types:
        raise ValueError(f"supervisor {name!r} does not handle packetflow.actors.Escalated")
    return spec
