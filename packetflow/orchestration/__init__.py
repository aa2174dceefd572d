"""The orchestration substrate: durable sagas. A saga is declared in a topology module as
a list of steps (send a request to a reactor or actor, call an MCP tool, sleep, wait for an
intent, parallel branches joined), each with an optional compensation and timeout; every
start intent makes an instance, keyed by the intent's key, kept in a changelog-backed store
and moved on by the worker owning its partition, so it survives crashes and rebalances.

::

    from packetflow.orchestration import call_tool, saga, send, sleep

    trips = saga(topology, "trip", start=BookTrip)
    trips.steps(
        send("flight", lambda s: ReserveFlight(trip=s.id), expect=FlightReserved,
             compensate=lambda s: CancelFlight(trip=s.id)),
        sleep("hold", minutes=15),
        call_tool("payment", "payments", "charge", lambda s: {"trip": s.id}),
    )

A failed or timed-out step makes the saga run the compensations of the completed steps in
reverse order; it ends ``completed``, ``compensated`` or ``failed`` (a compensation failed
too), as a :class:`SagaOutcome` on its outcome topic, and every transition is a
:class:`SagaTransition` on its transitions topic. An instance acts with the kept authority
of the token that started it (never the token), checked before each step and again where
the step arrives.

``steps.py`` is the declarations, ``intents.py`` what sagas send, ``agent.py`` the state
machine on the engine's agent contract, ``declare.py`` what users call, ``operate.py`` what
the changelog says of each instance. May import: ``packetflow.core`` and ``packetflow.engine``.
"""

from __future__ import annotations

from packetflow.orchestration.declare import Saga, saga
from packetflow.orchestration.intents import SagaOutcome, SagaTransition
from packetflow.orchestration.steps import (
    Instance,
    call_tool,
    parallel,
    send,
    sleep,
    wait_for,
)

__all__ = [
    "Instance",
    "Saga",
    "SagaOutcome",
    "SagaTransition",
    "call_tool",
    "parallel",
    "saga",
    "send",
    "sleep",
    "wait_for",
]
