"""The scheduler under virtual time (TestDriver): firings with the kept authority and
derived ids, misfire policies after an outage, operations, and every way a schedule is
refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from support.running import unique

from packetflow import Context, Intent, TestDriver, Topology
from packetflow.temporal import (
    BAD_SCHEDULE,
    Scheduler,
    after,
    at,
    cron,
    every,
    firing_id,
    resource_of,
    scheduler,
)
from packetflow.temporal.timing import local, ms

BERLIN = "Europe/Berlin"
START = local("2026-01-30 12:20", BERLIN)  # off the hour: every(3600) fires at :00
BILLING = ["bill:invoice/*", "schedule:invoice/*"]


class Invoice(Intent, type_name="sched.Invoice", key="customer",
              requires=["bill:invoice/{customer}"]):  # fmt: skip
    customer: str


class Internal(Intent, type_name="sched.Internal", key="id", internal=True):
    id: str


def _billing() -> tuple[Topology, Scheduler, list[tuple[Invoice, Context]]]:
    topo = Topology(unique("billing"))
    schedules = scheduler(topo)
    seen: list[tuple[Invoice, Context]] = []

    @topo.reactor(Invoice, topic="invoices")
    def invoice(intent: Invoice, ctx: Context) -> None:
        seen.append((intent, ctx))

    topo.route(Internal, "invoices")
    return topo, schedules, seen


def _driver(topo: Topology) -> TestDriver:
    return TestDriver(topo, start_time=START)


def _add(driver: TestDriver, schedules: Scheduler, timing: Any, *, id: str = "inv-c1",
         grants: list[str] = BILLING, ttl: str = "400d", **options: Any) -> str:  # fmt: skip
    token = driver.issue("billing-svc", grants, ttl=ttl)
    driver.send(schedules.create(Invoice(customer="c1"), timing, id=id, **options), token=token)
    return token


def test_a_monthly_cron_fires_each_month_with_the_creators_authority() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        _add(driver, schedules, cron("0 9 1 * *", tz=BERLIN))
        driver.advance(timedelta(days=365))
        assert len(seen) == 12
        firsts = [ctx.baggage["scheduled"] for _, ctx in seen]
        assert firsts[0] == str(ms(local("2026-02-01 09:00", BERLIN)))
        assert firsts[2] == str(ms(local("2026-04-01 09:00", BERLIN)))  # after the DST change
        _, ctx = seen[0]
        assert ctx.principal == "billing-svc"
        assert ctx.intent_id == firing_id("inv-c1", int(firsts[0]))  # derived: duplicates show
        assert ctx.baggage["schedule"] == "inv-c1" and ctx.baggage["missed"] == "0"
        assert ctx.token is None  # the token was never kept: its grants were
        assert not driver.denied() and not driver.dead_letters()
        assert driver.metrics["schedule_firings"] == {"scheduler": 12}


def test_after_fires_once_on_the_worker_clock_and_the_schedule_is_done() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        _add(driver, schedules, after(timedelta(minutes=10)))
        driver.advance(timedelta(minutes=9))
        assert seen == []
        driver.advance(timedelta(minutes=2))
        assert len(seen) == 1
        assert driver.state("scheduler", "inv-c1") is None  # nothing left to fire


@pytest.mark.parametrize(
    ("misfire", "catch_up", "fired"),
    [
        ("coalesce", 365 * 86400, ["9"]),  # once, for the latest, saying 9 were missed
        ("fire_all", 365 * 86400, ["0"] * 10),  # each of them
        ("skip", 365 * 86400, []),  # none: the next on schedule says how many were missed
        ("fire_all", 3.5 * 3600, ["6"] * 4),  # only those within the catch-up window
    ],
)
def test_after_an_outage_the_misfire_policy_decides(
    misfire: str, catch_up: float, fired: list[str]
) -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        _add(driver, schedules, every(3600), misfire=misfire, catch_up=catch_up)
        on_time = len(seen)  # START is on the hour: the first time is now
        driver.clock.advance(10 * 3600 + 60)  # the worker was away: 10 times went by
        driver.advance(0)
        assert [ctx.baggage["missed"] for _, ctx in seen[on_time:]] == fired
        driver.advance(3600)  # then on schedule again, nothing missed
        assert seen[-1][1].baggage["missed"] == "0"


def test_pause_resume_trigger_backfill_and_cancel() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        token = _add(driver, schedules, every(3600))
        resource = resource_of(Invoice(customer="c1"))

        def op(name: str, **fields: Any) -> None:
            driver.send(schedules.command(name, "inv-c1", resource, **fields),  # type: ignore[arg-type]
                        token=token)  # fmt: skip

        driver.advance(3600)
        assert len(seen) == 1
        op("pause", note="month end")
        assert driver.state("scheduler", "inv-c1")["paused"] == "month end"
        driver.advance(5 * 3600)
        assert len(seen) == 1
        op("resume")
        driver.advance(3600)
        assert len(seen) == 2  # the paused hours are not made up
        op("trigger")
        assert len(seen) == 3
        begin = ms(START)
        op("backfill", start=begin, end=begin + 3 * 3600 * 1000)
        backfilled = [ctx for _, ctx in seen[3:]]
        assert len(backfilled) == 3
        # a backfilled time has the id it had on schedule: the first hour's is a duplicate
        assert backfilled[0].intent_id == seen[0][1].intent_id
        op("cancel")
        driver.advance(10 * 3600)
        assert len(seen) == 6
        assert driver.state("scheduler", "inv-c1") is None


def test_an_expired_token_fires_into_the_denied_topic_never_the_reactor() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        _add(driver, schedules, every(3600), ttl="2h")
        driver.advance(5 * 3600)
        assert len(seen) == 2  # the two hours before it expired (it lived 2 h from 11:20 UTC)
        denied = driver.denied()
        assert {d.header("pf-reason") for d in denied} == {"expired"}
        assert denied[0].intent == Invoice(customer="c1")
        assert "schedule inv-c1" in (denied[0].header("pf-error") or "")


def test_a_revoked_token_fires_into_the_denied_topic() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        token = _add(driver, schedules, every(3600))
        driver.advance(3600)
        driver.revoke(token=token, reason="left the company")
        driver.advance(3600)
        assert len(seen) == 1
        (denied,) = driver.denied()
        assert denied.header("pf-reason") == "revoked"
        assert "left the company" in (denied.header("pf-error") or "")


@pytest.mark.parametrize("lapse", ["revoked", "expired"])
def test_a_firing_in_flight_is_checked_again_when_it_arrives(lapse: str) -> None:
    """A firing sent while its token held, arriving after it was revoked or expired (a
    backlog, a replay of the same record), is denied at the reactor's door."""
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        token = _add(driver, schedules, every(3600), ttl="90m")
        driver.advance(3600)
        (fired,) = driver.records("invoices")
        if lapse == "revoked":
            driver.revoke(token=token, reason="left the company")
        else:
            driver.advance(3600)  # past the token's expiry (its firing there is denied too)
        denied_before = len(driver.denied())
        headers = list(fired.record.headers)
        driver.send_raw("invoices", fired.record.value, key=fired.record.key, headers=headers)
        assert len(seen) == 1
        assert [d.header("pf-reason") for d in driver.denied()[denied_before:]] == [lapse]


@pytest.mark.parametrize(
    ("grants", "reason"),
    [
        (["bill:invoice/*"], "insufficient"),  # no schedule: on the intent's resource
        (["schedule:invoice/*"], "insufficient"),  # may schedule, but not send it
    ],
)
def test_a_schedule_needs_schedule_on_the_resource_and_the_intents_own(
    grants: list[str], reason: str
) -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        _add(driver, schedules, every(3600), grants=grants)
        driver.advance(3 * 3600)
        assert seen == []
        assert [d.header("pf-reason") for d in driver.denied()] == [reason]
        assert driver.state("scheduler", "inv-c1") is None


def test_internal_intents_and_foreign_resources_cannot_be_scheduled() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        token = driver.issue("mallory", ["schedule:**", "bill:**"], ttl="1d")
        forged = schedules.create(Invoice(customer="c1"), every(60), id="x").model_copy(
            update={"scheduled_type": Internal.intent_type, "data": {"id": "i1"},
                    "resource": "intent/sched.Internal"})  # fmt: skip
        driver.send(forged, token=token)
        wrong = schedules.create(Invoice(customer="c1"), every(60), id="y").model_copy(
            update={"resource": "admin/everything"}
        )
        driver.send(wrong, token=token)
        driver.advance(600)
        assert seen == []
        (dead,) = driver.dead_letters()
        assert dead.header("pf-reason") == BAD_SCHEDULE
        assert "internal" in (dead.header("pf-error") or "")
        (denied,) = driver.denied()
        assert "is not one sched.Invoice names" in (denied.header("pf-error") or "")


def test_a_schedule_at_a_time_already_past_fires_once_at_once() -> None:
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        _add(driver, schedules, at(START - timedelta(minutes=5)))
        driver.advance(1)
        assert len(seen) == 1


def test_the_kept_grants_a_firing_carries_cannot_be_widened_or_reused() -> None:
    """A firing's plain capabilities count only under the worker's seal, which covers them:
    a copy with wider capabilities, or the same ones on another intent, is denied."""
    topo, schedules, seen = _billing()
    with _driver(topo) as driver:
        token = driver.issue("billing-svc", ["bill:invoice/c1", "schedule:invoice/c1"], ttl="1d")
        driver.send(schedules.create(Invoice(customer="c1"), every(3600), id="inv-c1"),
                    token=token)  # fmt: skip
        driver.advance(3600)
        (fired,) = driver.records("invoices")
        assert len(seen) == 1
        headers = list(fired.record.headers)
        widened = [(k, b'["bill:**"]' if k == "pf-capabilities" else v) for k, v in headers]
        driver.send_raw("invoices", fired.record.value, key=fired.record.key, headers=widened)
        other = Invoice(customer="c2").model_dump_json().encode()
        driver.send_raw("invoices", other, key=b"c2", headers=headers)
        assert len(seen) == 1
        reasons = [d.header("pf-reason") for d in driver.denied()]
        assert reasons == ["insufficient", "insufficient"]  # no seal holds: plain refused


def test_a_schedule_made_while_handling_a_firing_keeps_the_tokens_expiry() -> None:
    """Authority kept from a firing is the original token's, expiry and all: a schedule a
    reactor makes while handling one stops when that token expires."""
    topo = Topology(unique("chain"))
    schedules = scheduler(topo)
    seen: list[Invoice] = []

    class Kick(Intent, type_name="chain.Kick", key="customer",
               requires=["bill:invoice/{customer}"]):  # fmt: skip
        customer: str

    @topo.reactor(Kick, topic="kicks")
    def kick(message: Kick, ctx: Context) -> Any:  # each kick schedules invoices, hourly
        return schedules.schedule(Invoice(customer=message.customer), every(3600), id="hourly")

    @topo.reactor(Invoice, topic="invoices")
    def invoice(message: Invoice, ctx: Context) -> None:
        seen.append(message)

    with _driver(topo) as driver:
        token = driver.issue("svc", ["bill:invoice/*", "schedule:invoice/*"], ttl="3h")
        driver.send(schedules.create(Kick(customer="c1"), after(60), id="kick"), token=token)
        driver.advance(10 * 3600)
        kept = driver.state("scheduler", "hourly")
        assert kept is None or kept["authority"]["token_id"] is not None
        assert 1 <= len(seen) <= 3  # hours before the token expired, then denied
        assert {d.header("pf-reason") for d in driver.denied()} == {"expired"}
