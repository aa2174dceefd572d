"""Overlap policies under virtual time: a firing due while the previous one is unanswered is
sent anyway (allow_all), skipped (skip) or held, the latest only, until the answer comes
(buffer_one); an answer is the reply of anything the firing caused, or the engine's
Refused, and a run nobody answers ends after ``run_timeout``. Answers come only from
workers: a forged one is refused."""

from __future__ import annotations

from typing import Any

import pytest
from support.running import unique

from packetflow import Context, Intent, TestDriver, Topology, emit, reply
from packetflow.temporal import Scheduler, after, at, every, scheduler
from packetflow.temporal.timing import local, ms

START = local("2026-03-02 12:00:30", "UTC")  # every(60) fires at each minute's :00
GRANTS = ["run:job/*", "schedule:job/*"]


class Job(Intent, type_name="overlap.Job", key="name", requires=["run:job/{name}"]):
    name: str
    mode: str = "reply"  # reply | silent | fail | chain | spawn


class Step(Intent, type_name="overlap.Step", key="name", internal=True):
    name: str


class Done(Intent, type_name="overlap.Done", key="name"):
    name: str


def _jobs() -> tuple[Topology, Scheduler, list[Context]]:
    topo = Topology(unique("overlap"))
    schedules = scheduler(topo)
    runs: list[Context] = []

    @topo.reactor(Job, topic="jobs", emits=[Done, Step])
    def job(intent: Job, ctx: Context) -> Any:
        runs.append(ctx)
        if intent.mode == "fail":
            raise RuntimeError("the job failed")
        if intent.mode == "chain":  # the answer comes from a later reactor
            return emit(Step(name=intent.name))
        if intent.mode == "spawn":  # a schedule made while handling a firing
            child = Job(name="child", mode="silent")
            return schedules.schedule(child, after(10), id=f"child-{len(runs)}")
        return reply(Done(name=intent.name)) if intent.mode == "reply" else None

    @topo.reactor(Step, topic="steps", emits=[Done])
    def step(intent: Step, ctx: Context) -> Any:
        return reply(Done(name=intent.name))

    return topo, schedules, runs


def _scheduled(runs: list[Context]) -> list[int]:
    """The scheduled instants of the firings that ran, in seconds after START's minute."""
    base = ms(START) - 30_000
    return [(int(c.baggage["scheduled"]) - base) // 1000 for c in runs]


def _add(driver: TestDriver, schedules: Scheduler, mode: str, **options: Any) -> None:
    token = driver.issue("ops", GRANTS, ttl="30d")
    created = schedules.create(Job(name="nightly", mode=mode), every(60), id="j1", **options)
    driver.send(created, token=token)


def test_allow_all_sends_every_firing_whether_answered_or_not() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "silent")
        driver.advance(300)
        assert _scheduled(runs) == [60, 120, 180, 240, 300]
        assert runs[0].reply_to is None  # not a request: nothing waits for an answer


def test_skip_drops_firings_due_while_the_previous_is_unanswered() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "silent", overlap="skip", run_timeout=150)
        driver.advance(600)
        # 60 runs, unanswered until its run_timeout (210): 120 and 180 are skipped
        assert _scheduled(runs) == [60, 240, 420, 600]
        assert driver.metrics["schedule_overlaps"] == {"scheduler": 6}
        schedule = driver.inspect("scheduler", "j1")
        assert schedule["skipped"] == 6 and schedule["running"]["at"] == ms(START) + 570_000


def test_skip_lets_the_next_firing_go_once_the_reactor_answered() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "reply", overlap="skip", run_timeout=3600)
        driver.advance(300)
        assert _scheduled(runs) == [60, 120, 180, 240, 300]
        assert "running" not in driver.inspect("scheduler", "j1")
        assert driver.metrics.get("schedule_overlaps", {}) == {}
        assert not driver.dead_letters() and not driver.denied()


def test_an_answer_from_later_in_the_chain_ends_the_run() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "chain", overlap="skip", run_timeout=3600)
        driver.advance(200)
        assert _scheduled(runs) == [60, 120, 180]  # Step's reply ended each run


def test_a_schedule_made_by_a_firings_reactor_is_a_command_not_an_answer() -> None:
    """What a firing's reactor sends carries the firing's reply_to; a CreateSchedule among
    it is still taken as a schedule, and does not end the run."""
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "spawn", overlap="skip", run_timeout=3600)
        driver.advance(150)
        assert [c.baggage["schedule"] for c in runs] == ["j1", "child-1"]
        assert _scheduled(runs)[1] == 70  # 60 + after(10)
        assert driver.inspect("scheduler", "j1")["running"]["at"] == ms(START) + 30_000
        assert driver.metrics["schedule_overlaps"] == {"scheduler": 2}  # 120, 180 skipped
        assert not driver.dead_letters() and not driver.denied()


def test_the_engines_refusal_ends_a_run() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "fail", overlap="skip", run_timeout=3600)
        driver.advance(200)
        assert _scheduled(runs) == [60, 120, 180]
        assert [d.header("pf-reason") for d in driver.dead_letters()] == ["reactor-error"] * 3


def test_buffer_one_sends_the_latest_held_firing_when_the_run_ends() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "silent", overlap="buffer_one", run_timeout=140)
        driver.advance(400)
        # 60 runs until 200; 120 is held, then replaced by 180, which goes at 200 (late)
        # with its own scheduled time and id; 240 and 300 wait for it, 300 goes at 340;
        # 360 and 420 wait for that one (until 480)
        assert _scheduled(runs) == [60, 180, 300]
        assert runs[1].intent_id != runs[0].intent_id
        schedule = driver.inspect("scheduler", "j1")
        assert schedule["buffered"][0] == ms(START) + 390_000  # 420: the latest held


def test_a_held_firing_of_a_schedule_with_no_times_left_still_goes() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        token = driver.issue("ops", GRANTS, ttl="30d")
        job = Job(name="nightly", mode="silent")
        timing = every(60, max_count=2)
        created = schedules.create(job, timing, id="j1", overlap="buffer_one", run_timeout=90)
        driver.send(created, token=token)
        driver.advance(600)
        assert _scheduled(runs) == [60, 120]  # the second went when the first's run ended
        assert driver.inspect("scheduler", "j1") is None  # and then the schedule was done


def test_trigger_respects_the_overlap_policy_and_backfill_does_not() -> None:
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        token = driver.issue("ops", GRANTS, ttl="30d")
        job = Job(name="nightly", mode="silent")
        driver.send(schedules.create(job, at(local("2026-03-02 12:01", "UTC")), id="j1",
                                     overlap="skip"), token=token)  # fmt: skip
        driver.send(schedules.create(job, every(3600), id="j2", overlap="skip"), token=token)
        driver.advance(60)
        assert len(runs) == 1
        driver.send(schedules.command("trigger", "j2", "job/nightly"), token=token)
        driver.send(schedules.command("trigger", "j2", "job/nightly"), token=token)
        assert len(runs) == 2  # the second trigger came while the first was unanswered
        start, end = ms(START) - 4 * 3600_000, ms(START)
        driver.send(schedules.command("backfill", "j2", "job/nightly", start=start, end=end),
                    token=token)  # fmt: skip
        assert len(runs) == 6  # backfill is asked for: each of its four times went


def test_answers_come_only_from_workers() -> None:
    """The scheduler's topic takes any of the topology's types, but only as an answer a
    worker sealed: a forged answer is denied, and a stray record of such a type is not an
    answer at all."""
    topo, schedules, runs = _jobs()
    with TestDriver(topo, start_time=START) as driver:
        _add(driver, schedules, "silent", overlap="skip", run_timeout=3600)
        driver.advance(60)
        (fired,) = driver.records("jobs")
        physical = topo.physical(f"{topo.name}.schedules")
        forged = Context(reply_to=physical, requester="j1", correlation_id=fired.context.intent_id)
        driver.send(Done(name="nightly"), topic=f"{topo.name}.schedules", key="j1",
                    context=forged)  # fmt: skip
        driver.send(Done(name="nightly"), topic=f"{topo.name}.schedules", key="j1")
        driver.advance(120)
        assert len(runs) == 1  # still running: neither record ended it
        assert [d.header("pf-reason") for d in driver.denied()] == ["bad-reply-to"]
        assert [d.header("pf-reason") for d in driver.dead_letters()] == ["unknown-type"]


def test_overlap_and_run_timeout_are_checked_when_made() -> None:
    _, schedules, _ = _jobs()
    with pytest.raises(ValueError, match="overlap must be one of"):
        schedules.create(Job(name="a"), every(60), id="x", overlap="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_timeout must be positive"):
        schedules.create(Job(name="a"), every(60), id="x", run_timeout=0)
