"""topologies/trips.py: a trip held 15 minutes (virtual time) and released unconfirmed; a
flight that is never answered cancelled too; the demo's intents each with its own id; on a
running worker, the payment service over stdio MCP charges, declines (the hotel and flight
are cancelled) and refunds when ticketing refuses."""

from __future__ import annotations

from datetime import timedelta

from support.running import WAIT, running

from packetflow import Context, Issuer, KeyPair, TestDriver
from packetflow.orchestration import SagaOutcome
from topologies import trips
from topologies.trips import (
    TRAVELLER,
    UNANSWERED,
    BookTrip,
    CancelFlight,
    ConfirmTrip,
    generate_traffic,
)


def _trip(trip: str, traveller: str = "ann", amount: int = 500,
          route: str = "BER-LIS") -> BookTrip:  # fmt: skip
    return BookTrip(trip=trip, traveller=traveller, route=route, city="Lisbon", nights=2,
                    amount=amount)  # fmt: skip


def test_an_unconfirmed_trip_is_released_after_its_15_minute_hold() -> None:
    with TestDriver(trips.topology) as driver:
        token = driver.issue("agency", TRAVELLER)
        driver.send(_trip("h1"), token=token)
        assert list(driver.state("trip", "h1")["pending"]) == ["step:hold"]
        driver.advance(timedelta(minutes=14, seconds=59))
        assert driver.emitted("trip-outcomes") == []
        driver.advance(timedelta(seconds=1))
        (outcome,) = driver.emitted("trip-outcomes")
        assert isinstance(outcome, SagaOutcome)
        assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "hold", "timeout")
        assert sorted(outcome.compensated) == ["flight", "hotel"]
        assert driver.state("flights", "h1") == 1 and driver.state("hotels", "h1") == 1


def test_a_flight_never_answered_is_cancelled_by_the_id_derived_from_the_trip() -> None:
    """The flight step times out: it may have been booked, so it is compensated with the
    hotel, though it has no result: the cancellation names the booking from the trip id."""
    with TestDriver(trips.topology) as driver:
        token = driver.issue("agency", TRAVELLER)
        driver.send(_trip("u1", route=next(iter(UNANSWERED))), token=token)
        driver.advance(30)
        (outcome,) = driver.emitted("trip-outcomes")
        assert isinstance(outcome, SagaOutcome)
        assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "flight",
                                                                   "timeout")  # fmt: skip
        assert sorted(outcome.compensated) == ["flight", "hotel"]
        cancels = [r.intent for r in driver.records("flights")
                   if isinstance(r.intent, CancelFlight)]  # fmt: skip
        assert [c.booking for c in cancels] == [trips._booking("fl", "u1")]
        assert driver.state("flights", "u1") == 1 and driver.state("hotels", "u1") == 1
        assert driver.state("trip", "u1")["uncertain"] == ["flight"]


def test_the_demo_gives_every_intent_its_own_context() -> None:
    """One context for all would give every start the same intent id (and the same ids to
    their steps' requests, before those were derived from the instance too)."""
    traffic = list(generate_traffic(40, token="t"))
    assert len({ctx.intent_id for _, ctx in traffic}) == len(traffic)


async def test_payment_through_mcp_charges_declines_and_refunds() -> None:
    topology = trips.topology
    key = KeyPair.generate("trips-test")
    token = Issuer(key, name="t", hierarchy=topology.hierarchy).issue("agency", TRAVELLER,
                                                                       ttl=600)  # fmt: skip
    ctx = Context.new(token=token)
    security = topology.security.trusting({key.kid: key.public})
    async with running(topology, "memory://trips-example", security=security) as run:
        for trip, traveller, amount in (("p1", "ann", 500), ("p2", "ann", 2_500),
                                        ("p3", "mallory", 800)):  # fmt: skip
            await run.send(_trip(trip, traveller, amount), ctx)
            await run.send(ConfirmTrip(trip=trip), ctx)
        received = await run.client.wait_for("trip-outcomes", 3, timeout=WAIT)
        await run.idle()
        outcomes = {r.intent.saga_id: r.intent for r in received
                    if isinstance(r.intent, SagaOutcome)}  # fmt: skip
        cancelled = {t: (run.state("flights", t), run.state("hotels", t)) for t in outcomes}
        refund = run.state("trip", "p3")["history"]
    p1, p2, p3 = outcomes["p1"], outcomes["p2"], outcomes["p3"]
    assert p1.status == "completed"
    assert p1.results["payment"]["data"]["structured"]["amount"] == 500
    assert (p2.status, p2.step, p2.reason) == ("compensated", "payment", "mcp-error")
    assert "card declined" in (p2.error or "")
    assert (p3.status, p3.step, p3.reason) == ("compensated", "tickets", "reactor-error")
    assert p3.compensated[0] == "payment" and sorted(p3.compensated[1:]) == ["flight", "hotel"]
    assert refund[-6][1:3] == ["compensation-completed", "payment"]  # refunded through MCP
    assert cancelled == {"p1": (0, 0), "p2": (1, 1), "p3": (1, 1)}
