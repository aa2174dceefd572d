"""Sagas under virtual time (TestDriver): the happy path with its transitions and kept
authority, each kind of step failure with the compensations in reverse order (each once),
timeouts, parallel branches, waiting for an intent, a denied step, a revoked or expired
token mid-saga, a cron sleep, what the declaration refuses, intents keyed by another instance
than theirs, what a compensation sees of a step that timed out, and step ids per instance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from support.sagas import GRANTS, OUTCOMES, Book, Confirm, Reserve, Reserved, travel

from packetflow import Context, Intent, TestDriver, Topology
from packetflow.engine.mcpcall import McpCall
from packetflow.engine.topology import TopologyError
from packetflow.orchestration import (
    SagaOutcome,
    SagaTransition,
    parallel,
    saga,
    send,
    sleep,
    wait_for,
)
from packetflow.orchestration.agent import request_id
from packetflow.orchestration.steps import Instance

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def driver() -> Iterator[TestDriver]:
    topology, _ = travel()
    with TestDriver(topology, start_time=START) as driver:
        yield driver


def _outcome(driver: TestDriver, trip: str) -> SagaOutcome:
    found = [o for o in driver.emitted(OUTCOMES) if isinstance(o, SagaOutcome)
             and o.saga_id == trip]  # fmt: skip
    assert len(found) == 1, found  # it ends once
    return found[0]


def _undone(driver: TestDriver, trip: str) -> list[str]:
    """The compensations the ``undo`` reactor saw for ``trip``, in order."""
    return list(driver.state("undo", trip) or [])


def _book(driver: TestDriver, trip: str, token: str, **modes: str) -> None:
    driver.send(Book(trip=trip, modes=modes), token=token)


def test_the_happy_path_runs_every_step_with_the_starters_kept_authority(
    driver: TestDriver,
) -> None:
    ann = driver.issue("ann", GRANTS, ttl="1d")
    _book(driver, "t1", ann)
    state = driver.inspect("trip", "t1")
    assert state["status"] == "running"
    assert driver.metrics["sagas_running"] == {"trip": 1}
    assert list(state["pending"]) == ["step:confirm"]  # the parallel stage joined
    assert state["timers"] == {"step:confirm": "2026-03-02T08:10:00+00:00"}
    driver.send(Confirm(trip="t1", ok=False), token=ann)  # does not match: still waiting
    assert list(driver.state("trip", "t1")["pending"]) == ["step:confirm"]
    assert [i["data"]["ok"] for i in driver.state("trip", "t1")["inbox"]] == [False]
    driver.send(Confirm(trip="t1"), token=ann)
    assert list(driver.state("trip", "t1")["pending"]) == ["step:hold"]
    driver.advance(59)
    assert driver.emitted(OUTCOMES) == []
    driver.advance(1)
    outcome = _outcome(driver, "t1")
    assert outcome.status == "completed" and outcome.reason is None
    assert set(outcome.results) == {"flight", "hotel", "car", "insurance", "confirm", "seat"}
    assert outcome.results["flight"]["data"] == {"trip": "t1", "what": "flight"}
    assert _undone(driver, "t1") == []
    assert not driver.dead_letters() and not driver.denied()
    # every request went with ann's kept grants, no token, an id derived from the start
    requests = [r for r in driver.records("reservations") if isinstance(r.intent, Reserve)]
    assert len(requests) == 4 and all(r.context is not None for r in requests)
    contexts = [r.context for r in requests if r.context is not None]
    assert {c.principal for c in contexts} == {"ann"}
    assert all(c.token is None and c.capabilities for c in contexts)
    start_id = driver.state("trip", "t1")["start"]["intent_id"]
    assert contexts[0].intent_id == request_id("trip", "t1", start_id, "step:flight")
    assert len({c.trace_id for c in contexts}) == 1  # one trace: the start intent's
    # the transitions topic holds the history, as the state does
    events = [(t.event, t.step) for t in driver.emitted("travel.trip.transitions")
              if isinstance(t, SagaTransition)]  # fmt: skip
    assert events == [(e[1], e[2]) for e in driver.state("trip", "t1")["history"]]
    assert events[0] == ("started", None) and events[-1] == ("completed", None)
    assert ("step-completed", "confirm") in events
    metrics = driver.metrics
    assert metrics["saga_started"] == {"trip": 1}
    assert metrics["saga_completed"] == {"trip": 1}
    assert driver.worker.metrics.registry.value("packetflow_sagas_running", saga="trip") == 0


@pytest.mark.parametrize(
    ("modes", "reason", "failed", "undone"),
    [
        ({"flight": "raise"}, "reactor-error", "flight", []),
        ({"hotel": "raise"}, "reactor-error", "hotel", ["flight"]),
        ({"hotel": "wrong"}, "unexpected-reply", "hotel", ["flight"]),
        ({"insurance": "raise"}, "reactor-error", "insurance", ["car", "hotel", "flight"]),
        ({"car": "wrong"}, "unexpected-reply", "car", ["insurance", "hotel", "flight"]),
    ],
)
def test_a_failed_step_undoes_the_completed_ones_in_reverse_order_once(
    driver: TestDriver, modes: dict[str, str], reason: str, failed: str, undone: list[str]
) -> None:
    ann = driver.issue("ann", GRANTS)
    _book(driver, "t2", ann, **modes)
    outcome = _outcome(driver, "t2")
    assert (outcome.status, outcome.step, outcome.reason) == ("compensated", failed, reason)
    assert _undone(driver, "t2") == undone  # the hotel's undo is a request: "hotel" too
    assert outcome.compensated == [u for u in undone]
    driver.advance(3600)  # nothing more happens: no timer left, nothing compensated twice
    assert _undone(driver, "t2") == undone
    assert len(driver.emitted(OUTCOMES)) == 1
    history = [e[1] for e in driver.state("trip", "t2")["history"]]
    assert history.count("compensating") == 1 and history[-1] == "compensated"


def test_a_step_without_an_answer_times_out_and_is_compensated_too(driver: TestDriver) -> None:
    """No answer in time: the step may have happened, so it is undone with the others."""
    ann = driver.issue("ann", GRANTS)
    _book(driver, "t3", ann, hotel="silent")
    assert driver.emitted(OUTCOMES) == []
    driver.advance(4.9)
    assert driver.emitted(OUTCOMES) == []
    driver.advance(0.2)
    outcome = _outcome(driver, "t3")
    assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "hotel", "timeout")
    assert _undone(driver, "t3") == ["hotel", "flight"]


def test_parallel_branches_wait_for_each_other_before_compensating(driver: TestDriver) -> None:
    """The car fails at once; the insurance is still in flight: the saga waits for it (here
    its timeout) and then undoes it, the hotel and the flight."""
    ann = driver.issue("ann", GRANTS)
    _book(driver, "t4", ann, car="raise", insurance="silent")
    state = driver.state("trip", "t4")
    assert state["failure"]["step"] == "car" and list(state["pending"]) == ["step:insurance"]
    assert _undone(driver, "t4") == []
    driver.advance(5)
    outcome = _outcome(driver, "t4")
    assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "car", "reactor-error")
    assert _undone(driver, "t4") == ["insurance", "hotel", "flight"]


def test_a_step_its_authority_does_not_cover_is_denied_and_compensated(
    driver: TestDriver,
) -> None:
    no_car = driver.issue("bob", [g for g in GRANTS if not g.startswith("rent:")])
    _book(driver, "t5", no_car)
    outcome = _outcome(driver, "t5")
    assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "car", "insufficient")
    assert "rent:car/t5" in (outcome.error or "")
    assert sorted(_undone(driver, "t5")[:1]) == ["insurance"]
    assert _undone(driver, "t5") == ["insurance", "hotel", "flight"]
    (denied,) = driver.denied()
    assert denied.header("pf-reason") == "insufficient"


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_token_that_lapses_mid_saga_stops_its_next_step(driver: TestDriver, how: str) -> None:
    """The next step is set aside as denied and the saga compensates; the undo that needs
    the token's authority (releasing the hotel) is denied too, the saga's own (internal
    ``Cancel``) go: the saga ends ``failed``, naming the compensation it could not run."""
    ann = driver.issue("ann", GRANTS, ttl=300)
    bob = driver.issue("bob", ["confirm:trip/*"], ttl="1d")
    _book(driver, "t6", ann)
    if how == "revoked":
        driver.revoke(token=ann)
    else:
        driver.advance(301)
    driver.send(Confirm(trip="t6"), token=bob)  # confirmed by someone else: the seat is next
    outcome = _outcome(driver, "t6")
    assert (outcome.status, outcome.step, outcome.reason) == ("failed", "seat", how)
    assert outcome.compensations_failed == ["hotel"]
    assert sorted(_undone(driver, "t6")) == ["car", "flight", "insurance"]
    reasons = sorted(r.header("pf-reason") or "" for r in driver.denied())
    assert reasons == [how, how]  # the seat's request and the hotel's release
    assert driver.metrics["saga_failed"] == {"trip": 1}


def test_an_intent_sent_before_its_wait_begins_waits_in_the_inbox(driver: TestDriver) -> None:
    ann = driver.issue("ann", GRANTS, ttl="1d")
    token = Context.new("ann", token=ann)
    driver.send_many([(Book(trip="e1"), token), (Confirm(trip="e1"), token)])  # one batch
    assert list(driver.state("trip", "e1")["pending"]) == ["step:hold"]
    assert driver.state("trip", "e1")["inbox"] == []
    for _ in range(20):  # an instance keeps 16 such intents, then they are set aside
        driver.send(Confirm(trip="e1", ok=False), token=ann)
    assert len(driver.state("trip", "e1")["inbox"]) == 16
    assert len(driver.dead_letters()) == 4
    driver.advance(60)
    assert _outcome(driver, "e1").status == "completed"


def test_waiting_for_an_intent_times_out_and_others_are_dead_lettered(
    driver: TestDriver,
) -> None:
    ann = driver.issue("ann", GRANTS, ttl="1d")
    driver.send(Confirm(trip="nobody"), token=ann)  # no instance waits for it: kept aside
    (dead,) = driver.dead_letters()
    assert dead.header("pf-reason") == "saga-not-waiting"
    _book(driver, "t7", ann)
    driver.advance(timedelta(minutes=10))
    outcome = _outcome(driver, "t7")
    assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "confirm", "timeout")
    assert sorted(_undone(driver, "t7")[:2]) == ["car", "insurance"]
    assert _undone(driver, "t7")[2:] == ["hotel", "flight"]


def test_a_duplicate_start_is_ignored_and_a_finished_instance_is_kept_a_day(
    driver: TestDriver,
) -> None:
    ann = driver.issue("ann", GRANTS, ttl="3d")
    _book(driver, "t8", ann, flight="raise")
    _book(driver, "t8", ann, flight="raise")
    assert len(driver.emitted(OUTCOMES)) == 1
    assert driver.state("trip", "t8")["status"] == "compensated"
    driver.advance(timedelta(days=1, seconds=1))
    assert driver.state("trip", "t8") is None  # forgotten: the transitions topic remains


class Nightly(Intent, type_name="nightly.Run", key="id", requires=["run:job/{id}"]):
    id: str


class Done(Intent, type_name="nightly.Done", key="id", internal=True):
    id: str


def test_a_sleep_until_a_cron_instant_in_a_zone_and_a_failing_step_function() -> None:
    topology = Topology("nightly")
    jobs = saga(topology, "job", start=Nightly)
    jobs.steps(
        sleep("night", cron="0 2 * * *", tz="Europe/Berlin"),
        send("broken", lambda s: 1 / 0),  # type: ignore[arg-type,return-value]
    )
    with TestDriver(topology, start_time=START) as driver:
        driver.send(Nightly(id="j1"), token=driver.issue("ops", ["run:job/*"], ttl="2d"))
        due = driver.inspect("job", "j1")["timers"]["step:night"]
        berlin = datetime.fromisoformat(due).astimezone(ZoneInfo("Europe/Berlin"))
        assert (berlin.day, berlin.hour, berlin.minute) == (3, 2, 0)
        driver.advance(timedelta(hours=16, minutes=59))  # 02:00 in Berlin is 17 h away
        assert driver.state("job", "j1")["status"] == "running"
        driver.advance(timedelta(minutes=1))
        (outcome,) = driver.emitted("nightly.job.outcomes")
        assert isinstance(outcome, SagaOutcome)
        assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "broken",
                                                                   "step-error")  # fmt: skip
        assert "ZeroDivisionError" in (outcome.error or "")


class Open(Intent, type_name="nightly.Open", key="id"):
    id: str


class Unkeyed(Intent, type_name="nightly.Unkeyed", requires=["run:job/x"]):
    id: str


def _declare(*steps: Any, **options: Any) -> None:
    saga(Topology("bad"), "s", start=Nightly, **options).steps(*steps)


def _one() -> Any:
    return send("a", lambda s: Done(id=s.id))


def _routed_elsewhere(*steps: Any) -> None:
    """A wait for a type another reactor consumes: it would never reach the saga."""
    topology = Topology("bad")
    topology.route(Done, "elsewhere")
    saga(topology, "s", start=Nightly).steps(*steps)


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda: _declare(), "at least one step"),
        (lambda: _declare(_one(), _one()), "unique"),
        (lambda: _declare(_one(), "nope"), "not a step"),
        (lambda: _declare(wait_for("w", Nightly)), "cannot wait for its start"),
        (lambda: parallel(_one()), "at least two"),
        (lambda: sleep("z"), "positive duration"),
        (lambda: sleep("z", cron="61 * * * *"), "cron"),
        (lambda: send("x", lambda s: Done(id=s.id), timeout=0), "positive"),
        (lambda: saga(Topology("bad"), "s", start=Open).steps(_one()), "requires no capab"),
        (lambda: saga(Topology("bad"), "s", start=Unkeyed), "needs a key"),
        (lambda: _declare(wait_for("w", Unkeyed)), "Unkeyed needs a key"),
        (lambda: _routed_elsewhere(wait_for("w", Done)), "routed to elsewhere"),
    ],
)
def test_what_a_declaration_refuses(declare: Any, message: str) -> None:
    with pytest.raises((TopologyError, ValueError), match=message):
        declare()


def test_a_start_intent_routed_elsewhere_is_refused() -> None:
    topology = Topology("bad")
    topology.route(Nightly, "elsewhere")
    with pytest.raises(TopologyError, match="routed to elsewhere"):
        saga(topology, "s", start=Nightly)


def test_a_saga_that_calls_tools_needs_mcp_servers() -> None:
    from packetflow.orchestration import call_tool

    topology = Topology("nomcp")
    saga(topology, "s", start=Nightly).steps(call_tool("c", "srv", "t", lambda s: {}))
    assert McpCall not in topology.effect_handlers
    with pytest.raises(RuntimeError, match="declares no MCP servers"), TestDriver(topology):
        pass


# -- an intent keyed by another instance than the one its key field names ---------------


class Order(Intent, type_name="keyed.Order", key="order", requires=["order:shop/{shop}"]):
    """Its capability names the shop, not the key: the engine does not tie key and record."""

    order: str
    shop: str


class Approve(Intent, type_name="keyed.Approve", key="order", requires=["approve:shop/{shop}"]):
    order: str
    shop: str


def test_a_start_or_waited_for_intent_keyed_by_another_instance_is_set_aside() -> None:
    """Ann may approve shop a's orders; an approval of her order o1 keyed by bob's o2 (shop
    b) would move o2 on, and an order o1 keyed o3 would start o3: both are dead-lettered
    ``key-mismatch``, no instance touched."""
    topology = Topology("keyed")
    saga(topology, "order", start=Order).steps(wait_for("approval", Approve, timeout=60))
    with TestDriver(topology, start_time=START) as driver:
        ann = driver.issue("ann", ["order:shop/a", "approve:shop/a"])
        bob = driver.issue("bob", ["order:shop/b", "approve:shop/b"])
        driver.send(Order(order="o2", shop="b"), token=bob)
        driver.send(Approve(order="o1", shop="a"), token=ann, key="o2")
        driver.send(Order(order="o1", shop="a"), token=ann, key="o3")
        assert [d.header("pf-reason") for d in driver.dead_letters()] == ["key-mismatch"] * 2
        assert "keyed 'o2'" in (driver.dead_letters()[0].header("pf-error") or "")
        assert list(driver.state("order", "o2")["pending"]) == ["step:approval"]
        assert driver.state("order", "o3") is None
        assert driver.emitted("keyed.order.outcomes") == []
        driver.send(Approve(order="o2", shop="b"), token=bob)  # keyed by its own order
        (outcome,) = driver.emitted("keyed.order.outcomes")
        assert isinstance(outcome, SagaOutcome) and outcome.status == "completed"


# -- what a compensation sees of a step whose outcome is unknown -------------------------


class Undo(Intent, type_name="travel.Undo", key="trip", internal=True):
    trip: str
    booking: str
    uncertain: bool
    result: bool


def test_a_step_that_timed_out_is_compensated_without_a_result() -> None:
    """The silent flight times out: its compensation runs, sees no result (``get`` gives
    None, no KeyError) and the step named in ``uncertain``, and its undo is sent."""
    topology = Topology("unsure")

    @topology.reactor(Reserve, topic="reservations", emits=[Reserved])
    def reserver(request: Reserve, ctx: Context) -> Any:
        return None  # never answers

    @topology.reactor(Undo, topic="undo", state=list)
    def undo(request: Undo, ctx: Context, done: list[Any]) -> Any:
        return [*done, [request.booking, request.uncertain, request.result]], None

    saga(topology, "trip", start=Book).steps(
        send("flight", lambda s: Reserve(trip=s.id, what="flight"), expect=Reserved, timeout=5,
             compensate=lambda s: Undo(trip=s.id, booking=f"flight-{s.id}",
                                       uncertain="flight" in s.uncertain,
                                       result=s.results.get("flight") is not None)),
    )  # fmt: skip
    with TestDriver(topology, start_time=START) as driver:
        driver.send(Book(trip="u1"), token=driver.issue("ann", GRANTS))
        driver.advance(5)
        (outcome,) = driver.emitted("unsure.trip.outcomes")
        assert isinstance(outcome, SagaOutcome)
        assert (outcome.status, outcome.step, outcome.reason) == ("compensated", "flight",
                                                                   "timeout")  # fmt: skip
        assert outcome.compensated == ["flight"] and outcome.results == {}
        assert driver.state("undo", "u1") == [["flight-u1", True, False]]


def test_the_readme_saga_undoes_a_reservation_it_has_no_result_for(tmp_path: Any) -> None:
    """The README's compensations name the booking from the trip, not from the result."""
    import re
    import runpy
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (code,) = re.findall(r"<!-- readme-test: trips_saga.py -->\n```python\n(.*?)```", readme,
                         re.S)  # fmt: skip
    (tmp_path / "trips_saga.py").write_text(code)
    module = runpy.run_path(str(tmp_path / "trips_saga.py"))
    plan = module["trips"].spec.plan
    start = module["Book"](trip="t1", route="BER-LIS")
    view = Instance(id="t1", start=start, principal="ann", results={}, started=START,
                    uncertain=frozenset({"flight", "hotel"}))  # fmt: skip
    undone = [plan.by_name[name].compensate(view) for name in ("flight", "hotel")]
    assert [u.booking for u in undone] == ["flight-t1", "hotel-t1"]


# -- step request ids ----------------------------------------------------------------------


def test_instances_whose_starts_share_an_intent_id_send_distinct_requests(
    driver: TestDriver,
) -> None:
    """The start intent's id is the client's choice: two starts sent in one context share
    it, but their steps' requests (and so their answers) are told apart."""
    shared = Context.new("ann", token=driver.issue("ann", GRANTS, ttl="1d"))
    driver.send_many([(Book(trip="s1"), shared), (Book(trip="s2"), shared)])
    ids = [r.context.intent_id for r in driver.records("reservations") if r.context]
    assert len(ids) == 8 and len(set(ids)) == 8  # flight, hotel, car, insurance of each
    for trip in ("s1", "s2"):
        assert list(driver.state("trip", trip)["pending"]) == ["step:confirm"]
    assert request_id("trip", "s1", shared.intent_id, "step:flight") in ids


def test_a_steps_request_carries_its_deadline_and_its_answer_none(driver: TestDriver) -> None:
    """A request taken later than its step waits is set aside, never run after the step's
    compensation; its reply (or Refused) carries no deadline, so an answer the saga takes
    late is still the answer (a refused one is not refused again, and again)."""
    ann = driver.issue("ann", GRANTS, ttl="1d")
    _book(driver, "t1", ann)
    flight = next(r for r in driver.records("reservations")
                  if isinstance(r.intent, Reserve) and r.intent.what == "flight")  # fmt: skip
    assert flight.context is not None and flight.context.deadline is not None
    assert flight.context.deadline > START  # the step's due time, from its timeout
    own = driver.topology.agents["trip"].topic
    replies = [r for r in driver.records(own) if isinstance(r.intent, Reserved)]
    assert replies and all(r.context is not None and r.context.deadline is None for r in replies)
    assert "step:flight" not in driver.inspect("trip", "t1")["pending"]  # answered
