"""The temporal substrate: durable schedules that publish intents at, after, every and on
cron (IANA zones, daylight-saving changes as Debian cron), optionally only in business
hours, on the topology's own partitions.

::

    from packetflow.temporal import cron, scheduler

    schedules = scheduler(topology)

    @topology.reactor(Signup, topic="signups")
    def welcome(signup: Signup, ctx: Context):
        monthly = cron("0 9 1 * *", tz="Europe/Berlin")
        return schedules.schedule(Invoice(customer=signup.customer), monthly,
                                  id=f"invoice-{signup.customer}")

A schedule is created with the authority of what created it (``schedule:`` on the
scheduled intent's resource, and the intent's own requirements) and fires with that
authority kept (principal, grants, token id and validity; never the token): an expired or
revoked token's firings go to the denied topic. Missed firings after downtime follow a
catch-up window and a misfire policy; firing ids derive from (schedule id, instant).

``timing.py`` is when (pure), ``commands.py`` what a scheduler takes, ``agent.py`` the
scheduler on the engine's agent contract, ``declare.py`` what users call, ``operate.py``
what the changelog says of each schedule; :class:`Interval` (Allen's relations) and
:func:`within` come from ``packetflow.core.intervals``. May import: ``packetflow.core`` and
``packetflow.engine``.
"""

from __future__ import annotations

from packetflow.core.intervals import Interval, relation, within
from packetflow.temporal.agent import BAD_SCHEDULE, UNKNOWN_SCHEDULE, firing_id
from packetflow.temporal.commands import CreateSchedule, ScheduleCommand
from packetflow.temporal.declare import Scheduler, resource_of, scheduler
from packetflow.temporal.timing import (
    Calendar,
    Timing,
    after,
    at,
    business_hours,
    cron,
    every,
)

__all__ = [
    "BAD_SCHEDULE",
    "UNKNOWN_SCHEDULE",
    "Calendar",
    "CreateSchedule",
    "Interval",
    "ScheduleCommand",
    "Scheduler",
    "Timing",
    "after",
    "at",
    "business_hours",
    "cron",
    "every",
    "firing_id",
    "relation",
    "resource_of",
    "scheduler",
    "within",
]
