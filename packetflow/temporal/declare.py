"""Declaring a topology's scheduler, and what reactors, actors and clients hand it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from packetflow.core.context import Context
from packetflow.core.effects import Delivery, Emit
from packetflow.core.intent import Intent
from packetflow.engine.client import Client
from packetflow.engine.topology import Topology, TopologyError
from packetflow.temporal.agent import SCHEDULES, SchedulerSpec
from packetflow.temporal.commands import (
    CATCH_UP,
    MISFIRES,
    OVERLAPS,
    RUN_TIMEOUT,
    CreateSchedule,
    Misfire,
    Op,
    Overlap,
    ScheduleCommand,
)
from packetflow.temporal.timing import Timing, after


def _seconds(span: timedelta | float) -> float:
    return span.total_seconds() if isinstance(span, timedelta) else span


def resource_of(intent: Intent | type[Intent]) -> str:
    """The resource ``schedule:`` is checked on for scheduling ``intent``: the first its
    requirements name (``intent/<type>`` for one that requires nothing). For a class, its
    first requirement's template must name no field."""
    if isinstance(intent, Intent):
        found = [r for _, r in intent.requirements()]
        return found[0] if found else f"intent/{type(intent).intent_type}"
    return f"intent/{intent.intent_type}"


@dataclass(frozen=True)
class Scheduler:
    """A topology's scheduler: makes the intents that create and operate schedules."""

    topology: Topology
    name: str
    topic: str

    def create(
        self,
        intent: Intent,
        timing: Timing,
        *,
        id: str,
        topic: str | None = None,
        key: str | None = None,
        misfire: Misfire = "coalesce",
        catch_up: timedelta | float = CATCH_UP,
        overlap: Overlap = "allow_all",
        run_timeout: timedelta | float = RUN_TIMEOUT,
    ) -> CreateSchedule:
        """The :class:`CreateSchedule` for publishing ``intent`` at ``timing``'s times,
        as schedule ``id`` (an existing one of that id is replaced).

        ``overlap`` (``skip``, ``buffer_one``): a firing is a request, and one due before
        the previous one's answer came (its reactor's reply, or the engine's Refused; at
        most ``run_timeout`` later) is not sent, or waits for it (the latest one only)."""
        if misfire not in MISFIRES:
            raise ValueError(f"misfire must be one of {', '.join(MISFIRES)}, not {misfire!r}")
        if overlap not in OVERLAPS:
            raise ValueError(f"overlap must be one of {', '.join(OVERLAPS)}, not {overlap!r}")
        window = _seconds(catch_up)
        if window < 0:
            raise ValueError("catch_up must not be negative")
        run_for = _seconds(run_timeout)
        if run_for <= 0:
            raise ValueError("run_timeout must be positive")
        return CreateSchedule(
            schedule_id=id,
            resource=resource_of(intent),
            scheduled_type=type(intent).intent_type,
            data=intent.model_dump(mode="json"),
            target_topic=topic,
            target_key=key,
            timing=timing,
            misfire=misfire,
            catch_up=window,
            overlap=overlap,
            run_timeout=run_for,
        )

    def schedule(self, intent: Intent, timing: Timing, *, id: str, **options: Any) -> Emit:
        """The effect (from a reactor or actor) creating schedule ``id`` with the authority
        of the message being handled; ``options`` as for :meth:`create`."""
        return Emit(self.create(intent, timing, id=id, **options), self.topic, id)

    def command(
        self,
        op: Op,
        schedule_id: str,
        resource: str,
        *,
        note: str = "",
        start: int | None = None,
        end: int | None = None,
    ) -> ScheduleCommand:
        """The :class:`ScheduleCommand` for ``op`` on a schedule about ``resource``."""
        return ScheduleCommand(
            schedule_id=schedule_id, resource=resource, op=op, note=note, start=start, end=end
        )

    def cancel(self, schedule_id: str, resource: str) -> Emit:
        """The effect cancelling a schedule (from a reactor or actor)."""
        return Emit(self.command("cancel", schedule_id, resource), self.topic, schedule_id)

    def timeout(self, after_: timedelta | float, intent: Intent, *, id: str) -> Emit:
        """The effect publishing ``intent`` once ``after_`` from now unless cancelled with
        :meth:`cancel_timeout` first: a durable timeout (a deadline, a saga's step)."""
        return self.schedule(intent, after(after_), id=id)

    def cancel_timeout(self, id: str, intent: Intent | type[Intent]) -> Emit:
        """The effect cancelling timeout ``id`` (``intent``: the one it would publish, or
        its class when its requirement names no field)."""
        return self.cancel(id, resource_of(intent))

    async def add(
        self,
        client: Client,
        intent: Intent,
        timing: Timing,
        *,
        id: str,
        context: Context | None = None,
        **options: Any,
    ) -> Delivery:
        """Create schedule ``id`` from outside, with ``context``'s authority."""
        created = self.create(intent, timing, id=id, **options)
        return await client.send(created, context=context, topic=self.topic, key=id)

    async def send(
        self,
        client: Client,
        op: Op,
        schedule_id: str,
        resource: str,
        *,
        context: Context | None = None,
        **fields: Any,
    ) -> Delivery:
        """Operate on a schedule from outside (cancel, pause, resume, trigger, backfill)."""
        command = self.command(op, schedule_id, resource, **fields)
        return await client.send(command, context=context, topic=self.topic, key=schedule_id)


def scheduler(
    topology: Topology,
    *,
    name: str = "scheduler",
    topic: str | None = None,
    partitions: int | None = None,
) -> Scheduler:
    """Give ``topology`` a scheduler: schedules, keyed by id, in a changelog-backed store on
    the partitions of ``topic`` (default ``<topology>.schedules``), each fired by the worker
    that owns its partition."""
    topic = topic or f"{topology.name}.schedules"
    if any(a.kind == "scheduler" for a in topology.agents.values()):
        raise TopologyError(f"topology {topology.name} already has a scheduler")
    spec = SchedulerSpec(
        name=name,
        topic=topic,
        intent_types=(CreateSchedule, ScheduleCommand),
        description="durable schedules: intents published at, after, every, on cron",
        stores=(SCHEDULES,),
        topology=topology,
    )
    topology.add_agent(spec, partitions)
    return Scheduler(topology, name, topic)


def scheduler_of(topology: Topology) -> Scheduler:
    """The scheduler a topology was given (for the CLI)."""
    for spec in topology.agents.values():
        if isinstance(spec, SchedulerSpec):
            return Scheduler(topology, spec.name, spec.topic)
    raise LookupError(f"{topology.name} has no scheduler (packetflow.temporal.scheduler)")
