"""Declaring an actor type on a topology: :func:`actor`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from packetflow.actors.agent import ASKS, REMINDERS, SUPERVISION, ActorSpec, takes_id
from packetflow.actors.operate import ActorControl
from packetflow.actors.supervision import Supervision
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
    (default :func:`~packetflow.actors.restart`) decides what a failed message leads to.
    Capabilities are the intents' own, checked on every message as for a reactor.
    """
    # every actor type also takes an operator's commands, and Refused: the engine's answer
    # to one of its asks that was set aside (denied, dead-lettered)
    types: tuple[type[Intent], ...] = (*intent_types_of(handles), ActorControl, Refused)

    def register(fn: F) -> F:
        actor_name = name or fn.__name__
        doc = (fn.__doc__ or "").strip().splitlines()
        try:
            takes_id(fn)
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
            )
        except ValueError as exc:
            raise TopologyError(f"actor {actor_name}: {exc}") from None
        topology.add_agent(spec, partitions)
        return fn

    return register
