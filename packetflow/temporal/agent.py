"""The scheduler as an agent on the engine's contract: schedules in a changelog-backed store,
keyed and partitioned by schedule id, each with one durable timer for its next time.

A :class:`CreateSchedule` is checked (the intent it schedules decodes, is not internal,
goes to a topic of the topology's that is not the engine's, and the creator's grants cover
``schedule:`` on its resource and its own requirements), resolved (``after()`` becomes an
instant on the worker's clock) and stored with the authority it came with, kept as
:class:`~packetflow.engine.agent.KeptAuthority` (principal, grants, token id, chain and
validity; never the token). When its timer is due the scheduler works out which times are
due (a catch-up window and the misfire policy after downtime), checks the kept authority
(expired or revoked: the firing goes to the denied topic with the reason, never to a
reactor), and sends the intent sealed, with its grants, a context whose intent id is
derived from (schedule id, scheduled instant) and ``baggage`` saying the schedule, the
instant and how many firings were missed. Store changes, timers and sends are the worker's
batch: exactly-once topologies commit a firing with the schedule's next time.

Under an overlap policy (``skip``, ``buffer_one``) a firing is a request naming the
scheduler's topic as ``reply_to`` and the schedule as requester: an answer from anything it
caused (correlated by the firing's id), or the engine's Refused, ends its run; until then a
time that comes is skipped or held (the latest only), and ``run_timeout`` ends a run nobody
answers. The topic takes answers of any type the topology knows (``AgentSpec.any_answer``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from pydantic import ValidationError

from packetflow.core.capability import Capability
from packetflow.core.context import Context
from packetflow.core.effects import Emit
from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.core.replies import Refused
from packetflow.core.tokens import INSUFFICIENT
from packetflow.engine.agent import (
    AgentRuntime,
    AgentServices,
    AgentSpec,
    KeptAuthority,
    Origin,
    StoreDecl,
    Timer,
)
from packetflow.engine.codec import ERROR_HEADER, REASON_HEADER, TYPE_HEADER
from packetflow.engine.runtime.tracing import LINK_BAGGAGE
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Record
from packetflow.temporal.commands import CreateSchedule, ScheduleCommand
from packetflow.temporal.timing import At, Timing

log = logging.getLogger("packetflow.temporal")

SCHEDULES = StoreDecl(
    "", StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="schedule")
)
FIRE = "fire"  # the timer of each schedule's next time
RUN = "run"  # a firing under an overlap policy: when its run no longer holds the next back
FIRE_ALL_LIMIT = 100  # missed firings a fire_all schedule sends at most, at once
BACKFILL_LIMIT = 1_000  # firings one backfill sends at most
ON_TIME = 60_000  # ms: a firing this late is not a misfire (Quartz's threshold)
BAD_SCHEDULE = "bad-schedule"  # a schedule that cannot be taken (pf-reason)
UNKNOWN_SCHEDULE = "unknown-schedule"
_IDS = uuid.UUID("6a1d6f4e-2b55-4b8e-9a43-3f1c2d0b7e11")  # namespace of firing ids


def firing_id(schedule_id: str, scheduled: int) -> str:
    """The intent id of a schedule's firing at ``scheduled`` (ms): the same every time it
    is sent, so a consumer recognises a duplicate (at-least-once, after a crash)."""
    return uuid.uuid5(_IDS, f"{schedule_id}@{scheduled}").hex


@dataclass(frozen=True, kw_only=True)
class SchedulerSpec(AgentSpec):
    """The topology's scheduler (see :func:`packetflow.temporal.scheduler`)."""

    kind: ClassVar[str] = "scheduler"
    timers: ClassVar[bool] = True
    # a schedule's timers follow from the schedule (its next time, its run in flight): set
    # again from the store when assigned, they cannot disagree with it after a crash
    durable_timers: ClassVar[bool] = False
    # a firing under an overlap policy is a request: its answer, of whatever type the
    # reactor replies with, comes back keyed by the schedule's id
    takes_replies: bool = True
    any_answer: bool = True
    # the topology it schedules for: the intent types and topics a schedule may name
    topology: Topology = field(repr=False, compare=False)

    def describe(self) -> dict[str, Any]:
        return {"schedules": "keyed by schedule id, one durable timer each"}

    def runtime(self, services: AgentServices) -> SchedulerRuntime:
        return SchedulerRuntime(self, services)


class SchedulerRuntime(AgentRuntime):
    """One worker's schedules: those of the partitions it owns."""

    def __init__(self, spec: SchedulerSpec, services: AgentServices) -> None:
        self.spec = spec
        self.topology = spec.topology
        self.services = services
        self.store = services.store
        self.own_topic = services.source_topic  # physical: what its firings name as reply_to
        self.denied = services.names.physical(services.names.denied)
        self.dead = services.names.physical(services.names.dead_letters)
        self._internal = {self.topology.physical(t) for t in self.topology.internal_topics()}
        metrics, labels = services.metrics, {"scheduler": spec.name}
        self._fired = metrics.counter(
            "packetflow_schedule_firings_total", "intents schedules published",
            "schedule_firings", **labels,
        )  # fmt: skip
        self._missed = metrics.counter(
            "packetflow_schedule_missed_total",
            "schedule firings not sent (after downtime: misfire policy, catch-up window)",
            "schedule_missed", **labels,
        )  # fmt: skip
        self._overlapped = metrics.counter(
            "packetflow_schedule_overlaps_total",
            "firings due while the previous one was unanswered (skipped or buffered)",
            "schedule_overlaps", **labels,
        )  # fmt: skip
        self._lateness = metrics.histogram(
            "packetflow_schedule_lateness_seconds",
            "how long after its scheduled time a firing was sent",
            "schedule_lateness", **labels,
        )  # fmt: skip

    async def start(self) -> None:
        if self.services.seal is None:  # firings are sealed: without it none could be sent
            raise RuntimeError(
                f"scheduler {self.spec.name} needs a worker secret to seal its firings "
                "(packetflow caps secret, in the keys directory)"
            )

    async def assigned(self, partitions: set[int]) -> None:
        """Set each schedule's timers again from the restored store."""
        timers = self.services.timers
        for p in partitions:
            for key, schedule in self.store.items(p):
                if schedule.get("next") is not None and "paused" not in schedule:
                    timers.set(p, key, FIRE, schedule["next"], clock=True)
                running = schedule.get("running")
                if running is not None:
                    due = running["since"] + schedule["run_timeout"]
                    timers.set(p, key, RUN, due, clock=True)

    # -- commands ----------------------------------------------------------------------

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        # commands first: what a firing's reactor schedules carries the firing's reply_to
        if isinstance(intent, CreateSchedule):
            await self._create(record, intent, context)
        elif isinstance(intent, ScheduleCommand):
            await self._command(record, intent, context)
        elif context.reply_to == self.own_topic:  # sealed: a worker answering a firing
            await self._answered(record, intent, context)

    async def _create(self, record: Record, msg: CreateSchedule, context: Context) -> None:
        p, key = record.partition, record.key or b""
        if key != msg.schedule_id.encode():
            await self._refuse(record, BAD_SCHEDULE, "a schedule's record is keyed by its id")
            return
        try:
            intent, topic = self._target(msg.scheduled_type, msg.data, msg.target_topic)
        except (LookupError, ValueError) as exc:
            await self._refuse(record, BAD_SCHEDULE, str(exc))
            return
        resources = {r for _, r in intent.requirements()} or {f"intent/{msg.scheduled_type}"}
        if msg.resource not in resources:
            await self._refuse(
                record, BAD_SCHEDULE,
                f"resource {msg.resource!r} is not one {msg.scheduled_type} names "
                f"({', '.join(sorted(resources))})",
                denied=True,
            )  # fmt: skip
            return
        wanted = (*intent.requirements(), *(("schedule", r) for r in sorted(resources)))
        missing = self.topology.hierarchy.compile(context.capabilities).missing(wanted)
        if missing:
            who = context.principal or "anonymous"
            await self._refuse(
                record, INSUFFICIENT,
                f"{who} lacks {', '.join(missing)} to schedule "
                f"{msg.scheduled_type}",
                denied=True,
            )  # fmt: skip
            return
        authority = self.services.authority
        kept = authority.keep(context) if authority is not None else KeptAuthority(None, ())
        now = self._now()
        timing = msg.timing.resolve(now)
        first = timing.next_after(now - 1)
        if first is None and isinstance(timing.spec, At):
            first = timing.spec.at  # in the past: due at once, late (the misfire policy says)
        schedule = {
            "id": msg.schedule_id,
            "resource": msg.resource,
            "intent_type": msg.scheduled_type,
            "data": msg.data,
            "topic": topic,
            "key": msg.target_key,
            "timing": timing.model_dump(mode="json"),
            "misfire": msg.misfire,
            "catch_up": int(msg.catch_up * 1000),
            "overlap": msg.overlap,
            "run_timeout": int(msg.run_timeout * 1000),
            "authority": kept.as_json(),
            "created": now,
            "by": context.principal,
            # the span that made it: each firing's own trace links to it (traces: pf.link)
            "trace": f"{context.trace_id}-{context.span_id}",
            "passed": 0,  # its times that came: fired, or missed
            "missed": 0,
            "next": first,
        }
        if first is None:
            log.info("schedule %s has no time to fire: not kept", msg.schedule_id)
            self._drop(p, key)
            return
        previous = self.store.peek(p, key)
        if previous is not None and "running" in previous:  # replaced mid-run: still running
            schedule["running"] = previous["running"]
        self.store.put(p, key, schedule)
        self.services.timers.set(p, key, FIRE, first, clock=True)
        log.info("schedule %s: %s, next %s", msg.schedule_id, timing.describe(), first)

    def _target(
        self, intent_type: str, data: dict[str, Any], topic: str | None
    ) -> tuple[Intent, str | None]:
        """The scheduled intent, checked, and its topic (None: its type's)."""
        cls = self.topology.intent_type(intent_type)
        if cls.internal:
            raise ValueError(f"{intent_type} is internal: only workers emit it")
        if topic is not None and (
            topic not in self.topology.topics
            or self.topology.physical(topic) in self._internal
        ):
            raise ValueError(f"{topic!r} is not a topic of the topology's an intent may go to")
        if topic is None and self.topology.topic_for(cls) is None:
            raise ValueError(f"{intent_type} has no topic: name one")
        try:
            return cls.model_validate(data), topic
        except ValidationError as exc:
            raise ValueError(f"{intent_type}: {exc.errors()[0]['msg']}") from None

    async def _command(self, record: Record, msg: ScheduleCommand, context: Context) -> None:
        p, key = record.partition, record.key or b""
        schedule = self.store.peek(p, key) if key == msg.schedule_id.encode() else None
        if schedule is None:
            await self._refuse(record, UNKNOWN_SCHEDULE, f"no schedule {msg.schedule_id!r}")
            return
        if schedule["resource"] != msg.resource:
            await self._refuse(
                record, INSUFFICIENT,
                f"schedule {msg.schedule_id} is about {schedule['resource']}, not "
                f"{msg.resource}", denied=True,
            )  # fmt: skip
            return
        timers, now = self.services.timers, self._now()
        log.info("schedule %s: %s by %s", msg.schedule_id, msg.op, context.principal)
        if msg.op == "cancel":
            self._drop(p, key)
        elif msg.op == "pause":
            schedule["paused"] = msg.note or f"paused by {context.principal}"
            schedule.pop("buffered", None)  # what was held back does not go while paused
            timers.cancel(p, key, FIRE)
            self.store.put(p, key, schedule)
        elif msg.op == "resume":
            schedule.pop("paused", None)  # times that passed meanwhile are not made up
            self._next(p, key, schedule, self._timing(schedule).next_after(now, schedule["passed"]))
        elif msg.op == "trigger":  # as if due now: the overlap policy holds
            await self._start(p, key, schedule, now, 0)
            self.store.put(p, key, schedule)
        else:  # backfill: each time in the range, ids as on schedule (duplicates show);
            # asked for explicitly, so sent whatever runs (no overlap policy)
            start = msg.start if msg.start is not None else now
            end = msg.end if msg.end is not None else now
            timing = self._timing(schedule).model_copy(update={"max_count": None})
            for t in [t for t in timing.times(start - 1, BACKFILL_LIMIT) if t <= end]:
                await self._fire(p, key, schedule, t, 0, track=False)
            self.store.put(p, key, schedule)

    # -- firing ------------------------------------------------------------------------

    async def on_timer(self, timer: Timer) -> None:
        if timer.name == RUN:
            await self._run_timed_out(timer)
            return
        if timer.name != FIRE:
            return
        p, key = timer.partition, timer.key
        schedule = self.store.peek(p, key)
        if schedule is None or "paused" in schedule or schedule["next"] != timer.due:
            return  # cancelled, paused or set again meanwhile: a stale timer
        now, timing = self._now(), self._timing(schedule)
        due = [timer.due]
        while len(due) <= BACKFILL_LIMIT:
            nxt = timing.next_after(due[-1], schedule["passed"] + len(due))
            if nxt is None or nxt > now:
                break
            due.append(nxt)
        fire = self._misfire(schedule, due, now)
        missed = len(due) - len(fire)
        for t in fire:
            await self._start(p, key, schedule, t, missed)
        if missed:
            self._missed.inc(missed)
            schedule["missed"] += missed
            log.warning("schedule %s: %d firing(s) missed (%s, catch-up %ss)", schedule["id"],
                        missed, schedule["misfire"], schedule["catch_up"] // 1000)  # fmt: skip
        counted = schedule["passed"] + len(due)  # missed ones count towards max_count too
        schedule["passed"] = counted
        self._next(p, key, schedule, timing.next_after(max(due[-1], now), counted))

    def _misfire(self, schedule: dict[str, Any], due: list[int], now: int) -> list[int]:
        """Which of the due times to fire now. Those at most ``ON_TIME`` late all fire (a
        busy worker is not an outage); older ones are misfires: within the catch-up window,
        ``coalesce`` fires the latest once (unless an on-time firing stands for them),
        ``fire_all`` each (at most ``FIRE_ALL_LIMIT``), ``skip`` none."""
        on_time = [t for t in due if now - t <= ON_TIME]
        window = [t for t in due if ON_TIME < now - t <= schedule["catch_up"]]
        policy = schedule["misfire"]
        if policy == "fire_all":
            return [*window[-FIRE_ALL_LIMIT:], *on_time]
        if policy == "coalesce" and not on_time:
            return window[-1:]
        return on_time

    async def _start(
        self, p: int, key: bytes, schedule: dict[str, Any], at: int, missed: int
    ) -> None:
        """Fire for time ``at``, unless the previous firing is unanswered and the overlap
        policy says to skip this one or hold it (the latest only) until the answer."""
        policy = schedule.get("overlap", "allow_all")
        if policy == "allow_all":
            await self._fire(p, key, schedule, at, missed, track=False)
        elif "running" not in schedule:
            await self._fire(p, key, schedule, at, missed, track=True)
        else:
            self._overlapped.inc()
            running = schedule["running"]["at"]
            if policy == "buffer_one":
                schedule["buffered"] = [at, missed]
                log.info("schedule %s: firing at %s waits for the one at %s to be answered",
                         schedule["id"], at, running)  # fmt: skip
            else:
                schedule["skipped"] = schedule.get("skipped", 0) + 1
                log.info("schedule %s: firing at %s skipped, the one at %s is unanswered",
                         schedule["id"], at, running)  # fmt: skip

    async def _answered(self, record: Record, intent: Intent, context: Context) -> None:
        """An answer to a firing (a reply, or the engine's Refused): its run is over, and
        a firing the overlap policy held back goes now."""
        p, key = record.partition, record.key or b""
        schedule = self.store.peek(p, key)
        running = None if schedule is None else schedule.get("running")
        # what the firing caused carries its id as correlation: an answer from anywhere in
        # that chain (the reactor's reply, a later reactor's, the engine's Refused) ends it
        if (
            schedule is None
            or running is None
            or running["id"] != context.correlation_id
            or context.requester != schedule["id"]
        ):
            log.info("schedule %s: a %s that no firing waits for (late, or cancelled)",
                     key.decode(errors="replace"), type(intent).intent_type)  # fmt: skip
            return
        if isinstance(intent, Refused):
            log.warning("schedule %s: firing at %s refused (%s): %s", schedule["id"],
                        running["at"], intent.reason, intent.error)  # fmt: skip
        await self._finish(p, key, schedule)

    async def _run_timed_out(self, timer: Timer) -> None:
        p, key = timer.partition, timer.key
        schedule = self.store.peek(p, key)
        running = None if schedule is None else schedule.get("running")
        if schedule is None or running is None:
            return
        log.warning("schedule %s: firing at %s not answered within %ss; the next may go",
                    schedule["id"], running["at"], schedule["run_timeout"] // 1000)  # fmt: skip
        await self._finish(p, key, schedule)

    async def _finish(self, p: int, key: bytes, schedule: dict[str, Any]) -> None:
        schedule.pop("running", None)
        self.services.timers.cancel(p, key, RUN)
        buffered = schedule.pop("buffered", None)
        if buffered is not None:
            await self._fire(p, key, schedule, buffered[0], buffered[1], track=True)
        if schedule["next"] is None and "buffered" not in schedule:
            self._drop(p, key)  # its last time has gone
        else:
            self.store.put(p, key, schedule)

    async def _fire(
        self, p: int, key: bytes, schedule: dict[str, Any], at: int, missed: int, *, track: bool
    ) -> None:
        """Send the schedule's intent for time ``at`` with its kept authority, or set it
        aside in the denied topic when that authority no longer holds. ``track``: send it
        as a request whose answer comes back here (an overlap policy's run)."""
        intent, _ = self._target(schedule["intent_type"], schedule["data"], schedule["topic"])
        kept = KeptAuthority.from_json(schedule["authority"])
        fid = firing_id(schedule["id"], at)
        answer = {"reply_to": self.own_topic, "requester": schedule["id"]} if track else {}
        context = Context.new(
            principal=kept.principal,
            capabilities=[Capability.parse(g) for g in kept.grants],
            baggage={
                "schedule": schedule["id"],
                "scheduled": str(at),
                "missed": str(missed),
                **({LINK_BAGGAGE: schedule["trace"]} if "trace" in schedule else {}),
                **kept.baggage(),  # what is scheduled while handling it keeps the token's
            },
        ).model_copy(update={"intent_id": fid, "correlation_id": fid, **answer})
        authority = self.services.authority
        lapsed = authority.lapsed(kept) if authority is not None else None
        schedule["last"] = at
        if lapsed is not None:
            reason, message = lapsed
            log.warning("schedule %s: %s", schedule["id"], message)
            value = intent.model_dump_json().encode()
            made = Record(self.services.source_topic, p, -1, key, value,
                          [(TYPE_HEADER, type(intent).intent_type.encode())], at)  # fmt: skip
            await self.services.set_aside(
                self.denied, made,
                [(REASON_HEADER, reason), (ERROR_HEADER, f"schedule {schedule['id']}: {message}")],
            )  # fmt: skip
            return
        # queued with the batch (acknowledged by its flush or transaction); sealed where
        # the topology refuses plain capabilities (the interpreter's vouched path)
        emit = Emit(intent, schedule["topic"], schedule["key"], context)
        await self.services.effects.run_effects([emit], Origin(self.spec.name, context, key))
        self._fired.inc()
        now = self._now()
        self._lateness.observe(max(now - at, 0) / 1000)
        if track:
            schedule["running"] = {"id": fid, "at": at, "since": now}
            self.services.timers.set(p, key, RUN, now + schedule["run_timeout"], clock=True)

    def _next(self, p: int, key: bytes, schedule: dict[str, Any], nxt: int | None) -> None:
        if nxt is None and "buffered" not in schedule:  # no more times: the schedule is done
            log.info("schedule %s is done after %d time(s)", schedule["id"], schedule["passed"])
            self._drop(p, key)
            return
        schedule["next"] = nxt  # None: done once its held-back firing has gone
        self.store.put(p, key, schedule)
        if nxt is not None and "paused" not in schedule:
            self.services.timers.set(p, key, FIRE, nxt, clock=True)

    def _drop(self, p: int, key: bytes) -> None:
        self.store.delete(p, key)
        self.services.timers.cancel(p, key, FIRE)
        self.services.timers.cancel(p, key, RUN)

    async def _refuse(
        self, record: Record, reason: str, message: str, *, denied: bool = False
    ) -> None:
        """Set a command aside: denied (its authority) or dead-lettered (its content)."""
        log.warning("%s: %s", reason, message)
        if denied:
            extra = [(REASON_HEADER, reason), (ERROR_HEADER, message)]
            await self.services.set_aside(self.denied, record, extra)
        else:
            await self.services.dead_letter(record, reason, message)

    def _timing(self, schedule: dict[str, Any]) -> Timing:
        return Timing.model_validate(schedule["timing"])

    def _now(self) -> int:
        return int(self.services.clock.time() * 1000)

    def state(self, key: bytes | None) -> Any:
        return self.store.find(key)
