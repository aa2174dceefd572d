"""What a scheduler takes: :class:`CreateSchedule` and :class:`ScheduleCommand`, intents on
the scheduler's topic keyed by the schedule's id (so a schedule lives on one partition and
fires on the worker that owns it).

Both require ``schedule:<resource>``, where ``resource`` is a resource the scheduled intent
names in its own requirements (``intent/<type>`` for one that requires nothing): a token
that may send invoices (``bill:invoice/*``) schedules them with ``schedule:invoice/*`` as
well. The scheduler also checks that the creator's grants cover the scheduled intent's own
requirements, and keeps them (never the token) to fire with.
"""

from __future__ import annotations

from typing import Any, Literal

from packetflow.core.intent import Intent
from packetflow.temporal.timing import Timing

Misfire = Literal["coalesce", "fire_all", "skip"]
MISFIRES = ("coalesce", "fire_all", "skip")
# a firing due while the previous one has not been answered: sent anyway (allow_all), not
# sent (skip), or kept, the latest one only, until the answer comes (buffer_one)
Overlap = Literal["allow_all", "skip", "buffer_one"]
OVERLAPS = ("allow_all", "skip", "buffer_one")
RUN_TIMEOUT = 3600.0  # s: a firing not answered in this long no longer holds the next back
Op = Literal["cancel", "pause", "resume", "trigger", "backfill"]
CATCH_UP = 365 * 24 * 3600.0  # s: default catch-up window (Temporal's: a year)


class CreateSchedule(
    Intent,
    type_name="packetflow.temporal.CreateSchedule",
    key="schedule_id",
    requires=["schedule:{resource}"],
):
    """Create a schedule, or replace the one with this id (update)."""

    schedule_id: str
    resource: str  # one the scheduled intent's requirements name (see the module docstring)
    scheduled_type: str  # the scheduled intent's type name
    data: dict[str, Any]
    target_topic: str | None = None  # default: where the intent type is routed
    target_key: str | None = None  # default: the intent's key field
    timing: Timing
    misfire: Misfire = "coalesce"
    catch_up: float = CATCH_UP  # s: firings missed longer ago than this are dropped
    # skip and buffer_one send each firing as a request whose answer (a reply, or the
    # engine's Refused) ends its run; allow_all sends it as it is
    overlap: Overlap = "allow_all"
    run_timeout: float = RUN_TIMEOUT


class ScheduleCommand(
    Intent,
    type_name="packetflow.temporal.ScheduleCommand",
    key="schedule_id",
    requires=["schedule:{resource}"],
):
    """An operation on a schedule: cancel, pause, resume, trigger (fire once now) or
    backfill (fire each time it had in ``[start, end]``, ms)."""

    schedule_id: str
    resource: str  # the schedule's own (packetflow schedule show prints it)
    op: Op
    note: str = ""
    start: int | None = None
    end: int | None = None
