"""A travel saga for the orchestration tests: reserve a flight and a hotel, rent a car and
insure the trip in parallel, wait for the traveller's confirmation, hold a while, and (with
an MCP server) charge through a tool. How each step answers is chosen per trip by
``Book.modes`` (``ok``, ``raise``: the reactor fails and the request is dead-lettered,
``wrong``: a reply of another type, ``silent``: no reply). Compensations are counted, in
order, by the ``undo`` reactor's state per trip.

Also run as ``packetflow worker tests/support/sagas.py`` by the process tests (exactly-once,
four partitions, no hold, no MCP).
"""

from __future__ import annotations

import os
from typing import Any

from packetflow import Context, Intent, Topology, reply
from packetflow.mcp.client import ServerDecl, mcp_servers
from packetflow.orchestration import Saga, call_tool, parallel, saga, send, sleep, wait_for

OUTCOMES = "travel-outcomes"
GRANTS = ["book:trip/*", "reserve:trip/*", "rent:car/*", "confirm:trip/*"]


class Book(Intent, type_name="travel.Book", key="trip", requires=["book:trip/{trip}"]):
    trip: str
    modes: dict[str, str] = {}


class Reserve(Intent, type_name="travel.Reserve", key="trip", requires=["reserve:trip/{trip}"]):
    trip: str
    what: str
    mode: str = "ok"


class Rent(Intent, type_name="travel.Rent", key="trip", requires=["rent:car/{trip}"]):
    trip: str
    mode: str = "ok"


class Reserved(Intent, type_name="travel.Reserved", key="trip", internal=True):
    trip: str
    what: str


class Unavailable(Intent, type_name="travel.Unavailable", key="trip", internal=True):
    trip: str
    what: str


class Cancel(Intent, type_name="travel.Cancel", key="trip", internal=True):
    """The saga's own undo: requires nothing, so it goes whatever became of the token."""

    trip: str
    what: str


class ReleaseHotel(Intent, type_name="travel.ReleaseHotel", key="trip",
                   requires=["reserve:trip/{trip}"]):  # fmt: skip
    """An undo that needs the saga's authority still to hold (a revoked token's is denied)."""

    trip: str


class Released(Intent, type_name="travel.Released", key="trip", internal=True):
    trip: str


class Confirm(Intent, type_name="travel.Confirm", key="trip", requires=["confirm:trip/{trip}"]):
    trip: str
    ok: bool = True


def _mode(s: Any, step: str) -> str:
    return str(s.start.modes.get(step, "ok"))


def travel(
    *,
    name: str = "travel",
    hold: float = 60.0,
    mcp: ServerDecl | None = None,
    confirm: bool = True,
    timeout: float = 5.0,
    **options: Any,
) -> tuple[Topology, Saga]:
    """The travel topology (``options``: Topology's, ``partitions`` say) and its saga."""
    topology = Topology(name, **options)
    trips = saga(topology, "trip", start=Book, outcome_topic=OUTCOMES)

    @topology.reactor(Reserve | Rent, topic="reservations", emits=[Reserved, Unavailable])
    def reserver(request: Reserve | Rent, ctx: Context) -> Any:
        what = request.what if isinstance(request, Reserve) else "car"
        if request.mode == "raise":
            raise RuntimeError(f"no {what} today")
        if request.mode == "wrong":
            return reply(Unavailable(trip=request.trip, what=what))
        if request.mode == "silent":
            return None
        return reply(Reserved(trip=request.trip, what=what))

    @topology.reactor(Cancel | ReleaseHotel, topic="undo", state=list, emits=[Released])
    def undo(request: Cancel | ReleaseHotel, ctx: Context, done: list[str]) -> Any:
        if isinstance(request, ReleaseHotel):
            return [*done, "hotel"], reply(Released(trip=request.trip))
        return [*done, request.what], None

    def reserve(what: str) -> Any:
        return lambda s: Reserve(trip=s.id, what=what, mode=_mode(s, what))

    def cancel(what: str) -> Any:
        return lambda s: Cancel(trip=s.id, what=what)

    t = timeout
    steps: list[Any] = [
        send("flight", reserve("flight"), expect=Reserved, timeout=t, compensate=cancel("flight")),
        send("hotel", reserve("hotel"), expect=Reserved, timeout=t,
             compensate=send("release", lambda s: ReleaseHotel(trip=s.id), expect=Released,
                             timeout=t)),
        parallel(
            send("car", lambda s: Rent(trip=s.id, mode=_mode(s, "car")), expect=Reserved,
                 timeout=t, compensate=cancel("car")),
            [send("insurance", reserve("insurance"), expect=Reserved, timeout=t,
                  compensate=cancel("insurance"))],
        ),
    ]  # fmt: skip
    if confirm:
        steps.append(wait_for("confirm", Confirm, where=lambda s, c: c.ok, timeout=600))
        steps.append(send("seat", reserve("seat"), expect=Reserved, timeout=t,
                          compensate=cancel("seat")))  # fmt: skip
    if hold:
        steps.append(sleep("hold", seconds=hold))
    if mcp is not None:
        mcp_servers(topology, tools=mcp)
        steps.append(call_tool("payment", "tools", "echo", lambda s: {"text": _mode(s, "payment")},
                               compensate=cancel("payment")))  # fmt: skip
        steps.append(call_tool("receipt", "tools", "fail", lambda s: {"message": "no receipt"},
                               when=lambda s: _mode(s, "receipt") == "fail"))  # fmt: skip
    trips.steps(*steps)
    return topology, trips


# the process tests' worker: many trips at once, exactly-once, no waiting
topology, trips = travel(
    name="sagaproc",
    hold=0,
    confirm=False,
    timeout=120.0,  # a worker taking over after a SIGKILL answers late, not never
    allow_unsigned=True,  # the test inputs carry plain capabilities
    processing_guarantee=os.environ.get("PF_TEST_GUARANTEE", "exactly_once"),
    partitions=4,
)
