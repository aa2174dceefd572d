"""The actor substrate: virtual actors addressed by (type, id) on the topology's partitions.

::

    from packetflow.actors import actor, restart

    @actor(topology, CartMessage, state=Cart, topic="carts", supervision=restart(max_restarts=3))
    def cart(message: CartMessage, ctx: Context, cart: Cart) -> tuple[Cart, Effects]:
        match message:
            case AddItem(sku=sku):
                return cart.add(sku), None
            case ShowCart():
                return cart, reply(CartContents(items=cart.items))

An actor's mailbox is its key's partition, its state a changelog-backed store, and it takes
one message at a time; a tell is a send, an ask from outside ``Client.ask``, an ask from
inside an actor the :func:`ask` effect (its answer, or :class:`AskTimedOut`, comes back as a
message), reminders :func:`remind` (durable, with a misfire policy) and :func:`timer`
(in memory), passivation of idle actors, supervision (restart with backoff and a durable
stash, resume, stop, escalate to a supervisor actor whose :func:`decide` acts on one actor
or its whole group, every decision a record on ``<topology>.supervision``), routers over
pools of ids.

``declare.py`` is what users call; ``agent.py`` the agent on the engine's contract
(``packetflow.engine.agent``); ``asks.py``, ``reminders.py``, ``routers.py`` and
``supervision.py`` what effects, intents and policies there are, ``supervisors.py`` what
escalation sends and a supervisor answers; ``operate.py`` what the
changelogs say of each actor and an operator's start command. May import:
``packetflow.core`` and ``packetflow.engine`` (its contract, topology and transport records).
"""

from __future__ import annotations

from packetflow.actors.agent import FAILED, GAVE_UP, STOPPED
from packetflow.actors.asks import Ask, AskTimedOut, ask
from packetflow.actors.declare import actor
from packetflow.actors.reminders import (
    Forget,
    Remind,
    Reminder,
    StartTimer,
    forget,
    remind,
    timer,
)
from packetflow.actors.routers import Router, router
from packetflow.actors.supervision import Supervision, escalate, restart, resume, stop
from packetflow.actors.supervisors import Decide, Escalated, Supervise, decide

__all__ = [
    "FAILED",
    "GAVE_UP",
    "STOPPED",
    "Ask",
    "AskTimedOut",
    "Decide",
    "Escalated",
    "Forget",
    "Remind",
    "Reminder",
    "Router",
    "StartTimer",
    "Supervise",
    "Supervision",
    "actor",
    "ask",
    "decide",
    "escalate",
    "forget",
    "remind",
    "restart",
    "resume",
    "router",
    "stop",
    "timer",
]
