"""Trip booking as a saga: reserve a flight and a hotel at once, hold them 15 minutes for the
traveller to confirm, charge the card through the payment service's MCP tool, issue the
tickets; whatever fails undoes what was done, in reverse order.

Run it:  packetflow worker topologies.trips             (broker: $PACKETFLOW_BROKER or memory://)
Demo:    packetflow demo topologies.trips [--count N]   (embedded broker, generated trips)
Inspect: packetflow process list topologies.trips --broker kafka://...

A ``BookTrip`` (a token with ``traveller:trip/*`` and ``call:mcp/payments/*``) starts an
instance of saga ``trip``, keyed by the trip's id. The flight and hotel services answer
their requests with a booking (a sold-out route answers ``SoldOut``: the step fails; the
airline of a route in ``UNANSWERED`` never answers: the step times out, and as the flight may
have been booked, it is cancelled too, by the booking id derived from the trip). The
traveller has 15 minutes to send ``ConfirmTrip`` (one sent early waits for the hold). The
charge is ``payments``' ``charge`` tool (``topologies/payments_mcp.py``, started by the
worker over stdio), which declines amounts over 2,000: the hotel and the flight are then
cancelled. Ticketing refuses travellers on its no-fly list (the reactor raises, the
request is dead-lettered): the charge is refunded through the ``refund`` tool too. Each trip
ends as a ``SagaOutcome`` on ``trip-outcomes``; every step is a ``SagaTransition`` on
``trips.trip.transitions``.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packetflow import Context, Intent, Topology, reply
from packetflow.mcp.client import StdioServer, mcp_servers
from packetflow.orchestration import SagaOutcome, call_tool, parallel, saga, send, wait_for

topology = Topology("trips", capabilities={"traveller": ["book", "reserve", "confirm"]})
mcp_servers(topology, payments=StdioServer([sys.executable, str(Path(__file__).with_name(
    "payments_mcp.py"))]))  # fmt: skip
HOLD = 15 * 60.0  # seconds the flight and hotel are held for the traveller to confirm
SOLD_OUT = {"LIS-FNC"}
UNANSWERED = {"LIS-PXO"}  # the airline's system is down: no answer
NO_FLY = {"mallory"}


class BookTrip(Intent, type_name="trips.BookTrip", key="trip", requires=["book:trip/{trip}"]):
    """Book a trip: a flight on ``route``, ``nights`` in ``city``, paid ``amount``."""

    trip: str
    traveller: str
    route: str
    city: str
    nights: int
    amount: int


class ConfirmTrip(Intent, type_name="trips.ConfirmTrip", key="trip",
                  requires=["confirm:trip/{trip}"]):  # fmt: skip
    trip: str


class ReserveFlight(Intent, type_name="trips.ReserveFlight", key="trip",
                    requires=["reserve:trip/{trip}"]):  # fmt: skip
    trip: str
    route: str


class ReserveHotel(Intent, type_name="trips.ReserveHotel", key="trip",
                   requires=["reserve:trip/{trip}"]):  # fmt: skip
    trip: str
    city: str
    nights: int


class IssueTickets(Intent, type_name="trips.IssueTickets", key="trip",
                   requires=["reserve:trip/{trip}"]):  # fmt: skip
    trip: str
    traveller: str


class Booked(Intent, type_name="trips.Booked", key="trip", internal=True):
    trip: str
    booking: str


class SoldOut(Intent, type_name="trips.SoldOut", key="trip", internal=True):
    trip: str


class CancelFlight(Intent, type_name="trips.CancelFlight", key="trip", internal=True):
    """The saga's undo (internal: only workers send it, whatever became of the token)."""

    trip: str
    booking: str


class CancelHotel(Intent, type_name="trips.CancelHotel", key="trip", internal=True):
    trip: str
    booking: str


def _booking(kind: str, trip: str) -> str:
    """A trip's booking id: derived from the trip, so an undo can name it without the
    step's result (a reservation that timed out may have been made: it is undone too)."""
    return f"{kind}-{hashlib.sha256(trip.encode()).hexdigest()[:8]}"


def _charge_id(trip: str) -> str:
    """The charge id the payment service gives a trip's charge (payments_mcp.charge)."""
    return "ch-" + hashlib.sha256(trip.encode()).hexdigest()[:12]


@topology.reactor(ReserveFlight | CancelFlight, topic="flights", state=int,
                  emits=[Booked, SoldOut])  # fmt: skip
def flights(request: ReserveFlight | CancelFlight, ctx: Context, cancelled: int) -> Any:
    """Books seats (a sold-out route answers SoldOut, an unanswered one nothing); counts
    cancellations per trip."""
    if isinstance(request, CancelFlight):
        return cancelled + 1, None
    if request.route in UNANSWERED:
        return cancelled, None
    if request.route in SOLD_OUT:
        return cancelled, reply(SoldOut(trip=request.trip))
    return cancelled, reply(Booked(trip=request.trip, booking=_booking("fl", request.trip)))


@topology.reactor(ReserveHotel | CancelHotel, topic="hotels", state=int, emits=[Booked])
def hotels(request: ReserveHotel | CancelHotel, ctx: Context, cancelled: int) -> Any:
    if isinstance(request, CancelHotel):
        return cancelled + 1, None
    return cancelled, reply(Booked(trip=request.trip, booking=_booking("ht", request.trip)))


@topology.reactor(IssueTickets, topic="ticketing", emits=[Booked])
def ticketing(request: IssueTickets, ctx: Context) -> Any:
    if request.traveller in NO_FLY:
        raise PermissionError(f"{request.traveller} may not fly")
    return reply(Booked(trip=request.trip, booking=_booking("tk", request.trip)))


trips = saga(topology, "trip", start=BookTrip, outcome_topic="trip-outcomes")
trips.steps(
    parallel(
        send("flight", lambda s: ReserveFlight(trip=s.id, route=s.start.route),
             expect=Booked, timeout=30,
             compensate=lambda s: CancelFlight(trip=s.id, booking=_booking("fl", s.id))),
        send("hotel", lambda s: ReserveHotel(trip=s.id, city=s.start.city, nights=s.start.nights),
             expect=Booked, timeout=30,
             compensate=lambda s: CancelHotel(trip=s.id, booking=_booking("ht", s.id))),
    ),
    wait_for("hold", ConfirmTrip, timeout=HOLD),
    call_tool("payment", "payments", "charge", lambda s: {"trip": s.id, "amount": s.start.amount},
              compensate=call_tool("refund", "payments", "refund",
                                   lambda s: {"charge_id": _charge_id(s.id)})),
    send("tickets", lambda s: IssueTickets(trip=s.id, traveller=s.start.traveller),
         expect=Booked, timeout=30),
)  # fmt: skip


# -- demo --------------------------------------------------------------------------------

TRAVELLER = ["traveller:trip/*", "call:mcp/payments/*"]


def generate_traffic(count: int, token: str) -> Iterator[tuple[Intent, Context]]:
    """``count`` trips: most confirmed, one in ten over the card's limit, one in twenty
    never confirmed, one in twenty-five a no-fly traveller, one in thirty sold out. Each
    intent has its own context (its own intent id: one shared would make the requests of
    every trip's steps alike, and be dropped as duplicates)."""
    for i in range(count):
        trip = f"trip-{i:05d}"
        route = "LIS-FNC" if i % 30 == 29 else "BER-LIS"
        traveller = "mallory" if i % 25 == 24 else f"traveller-{i % 97}"
        amount = 2_400 if i % 10 == 9 else 300 + 7 * (i % 200)
        yield BookTrip(trip=trip, traveller=traveller, route=route, city="Lisbon", nights=3,
                       amount=amount), Context.new(token=token)  # fmt: skip
        if i % 20 != 19:  # early is fine: it waits for the hold
            yield ConfirmTrip(trip=trip), Context.new(token=token)


def demo(count: int = 20_000) -> None:
    """``packetflow demo topologies.trips``: ``count`` intents' worth of trips (at most 500)
    on the embedded broker, the payment service over stdio, until every confirmed trip has
    ended; prints the outcomes and one compensated trip's history."""
    asyncio.run(_demo(max(1, min(count // 2, 500))))


async def _demo(count: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from packetflow import Client, Issuer, KeyPair, Worker
    from packetflow.engine.transport.memory import MemoryTransport

    console = Console()
    transport = MemoryTransport("memory://trips-demo", name=f"trips-demo-{time.time_ns()}")
    key = KeyPair.generate("demo")
    token = Issuer(key, name="demo", hierarchy=topology.hierarchy).issue("agency", TRAVELLER,
                                                                          ttl=3600)  # fmt: skip
    worker = Worker(topology, transport, security=topology.security.trusting({key.kid: key.public}))
    held = sum(1 for i in range(count) if i % 20 == 19)
    started = time.perf_counter()
    async with worker, Client(transport, topology) as client:
        runner = asyncio.create_task(worker.run())
        await client.send_many(list(generate_traffic(count, token)))
        with console.status(f"{count} trips under way"):
            ended = await client.wait_for("trip-outcomes", count - held, timeout=300)
            await worker.wait_idle(timeout=60)
        seconds = time.perf_counter() - started
        outcomes = [r.intent for r in ended if isinstance(r.intent, SagaOutcome)]
        sample = next((o.saga_id for o in outcomes if o.step == "tickets"), None)
        history = worker.state("trip", sample)["history"] if sample else []
        cancelled = sum(worker.states("flights").values()), sum(worker.states("hotels").values())
        worker.request_stop()
        await runner
    table = Table(title=f"{count} trips in {seconds:.1f}s")
    for column in ("outcome", "failed step", "reason", "trips"):
        table.add_column(column)
    ends = Counter((o.status, o.step or "-", o.reason or "-") for o in outcomes)
    for (status, step, reason), n in sorted(ends.items()):
        table.add_row(status, step, reason, str(n))
    table.add_row("holding", "hold", "waits up to 15 min for ConfirmTrip", str(held))
    console.print(table)
    console.print(f"flights cancelled: {cancelled[0]}, hotels cancelled: {cancelled[1]}")
    if sample:
        console.print(f"[bold]{sample}[/] (a no-fly traveller):")
        for at, event, step, reason, _ in history:
            when = datetime.fromtimestamp(at / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
            console.print(f"  {when}  {event} {step or ''} {reason or ''}")


if __name__ == "__main__":
    demo(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
