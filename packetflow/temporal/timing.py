"""When a schedule fires, as data: an instant, an interval, a cron expression in a time zone,
bounded by start, end and a count, and optionally only inside a calendar (business hours
per weekday in a zone, less excluded dates).

Instants are integers: milliseconds since the epoch (UTC), as the engine's timers are.
Cron follows ``cronsim``, which matches Debian cron at daylight-saving changes: a local
time skipped by spring-forward fires at the first instant after the gap, a time repeated
by fall-back fires once, and expressions more frequent than hourly follow real time.
Intervals are aligned to the epoch (plus ``phase``), so they keep their beat across
restarts. Pure: no clock, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from packetflow.core.calendar import Calendar, business_hours, instant, zone

__all__ = ["Calendar", "Timing", "after", "at", "business_hours", "cron", "every", "instant",
           "local", "ms"]  # fmt: skip

SEARCH_LIMIT = 100_000  # candidate instants a calendar may pass over before giving up


def ms(moment: datetime) -> int:
    """``moment`` (aware) in ms since the epoch."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment.isoformat()} has no time zone: naive times are ambiguous")
    return int(moment.timestamp() * 1000)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class At(_Frozen):
    """Once, at ``at``."""

    kind: Literal["at"] = "at"
    at: int

    def next_after(self, t: int) -> int | None:
        return self.at if self.at > t else None

    def describe(self) -> str:
        return f"at {instant(self.at).isoformat()}"


class Every(_Frozen):
    """Every ``every`` ms, at the epoch plus ``phase`` plus whole intervals."""

    kind: Literal["every"] = "every"
    every: int
    phase: int = 0

    @field_validator("every")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("an interval must be longer than 0")
        return value

    def next_after(self, t: int) -> int:
        return self.phase + ((t - self.phase) // self.every + 1) * self.every

    def describe(self) -> str:
        phase = f" (phase {timedelta(milliseconds=self.phase)})" if self.phase else ""
        return f"every {timedelta(milliseconds=self.every)}{phase}"


class Cron(_Frozen):
    """On a cron expression (cronsim's syntax: 5 fields, or 6 with seconds) in an IANA time
    zone."""

    kind: Literal["cron"] = "cron"
    expr: str
    tz: str = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> Cron:
        zone(self.tz)
        try:
            CronSim(self.expr, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"cron {self.expr!r}: {exc}") from None
        return self

    def next_after(self, t: int) -> int | None:
        start = instant(t, self.tz)
        try:
            return ms(next(CronSim(self.expr, start)))
        except StopIteration:  # cronsim stops after 50 years without a match (Feb 30)
            return None

    def describe(self) -> str:
        return f"cron {self.expr!r} in {self.tz}"


class After(_Frozen):
    """Once, ``delay`` ms after the schedule is created (on the worker's clock): made an
    :class:`At` when the scheduler takes the schedule (:meth:`Timing.resolve`)."""

    kind: Literal["after"] = "after"
    delay: int

    def next_after(self, t: int) -> int | None:
        raise ValueError("after(): resolved to an instant when the schedule is created")

    def describe(self) -> str:
        return f"after {timedelta(milliseconds=self.delay)}"


Spec = Annotated[At | After | Every | Cron, Field(discriminator="kind")]


class Timing(_Frozen):
    """A schedule's times: ``spec`` within ``[start, end]``, at most ``max_count`` of them,
    and only those inside ``only`` when given."""

    spec: Spec
    start: int | None = None
    end: int | None = None
    max_count: int | None = None
    only: Calendar | None = None

    @model_validator(mode="after")
    def _valid(self) -> Timing:
        if self.max_count is not None and self.max_count < 1:
            raise ValueError("max_count must be at least 1")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end comes before start")
        return self

    def resolve(self, now: int) -> Timing:
        """This timing with ``after()`` made an instant from ``now`` (ms)."""
        if isinstance(self.spec, After):
            return self.model_copy(update={"spec": At(at=now + self.spec.delay)})
        return self

    def next_after(self, t: int, fired: int = 0) -> int | None:
        """The first time after ``t`` (``fired``: how many times it has fired already)."""
        if self.max_count is not None and fired >= self.max_count:
            return None
        if self.start is not None:
            t = max(t, self.start - 1)
        for _ in range(SEARCH_LIMIT):
            nxt = self.spec.next_after(t)
            if nxt is None or (self.end is not None and nxt > self.end):
                return None
            if self.only is None or self.only.contains(nxt):
                return nxt
            t = nxt
        return None

    def times(self, after: int, count: int, fired: int = 0) -> list[int]:
        """The next ``count`` times after ``after``."""
        out: list[int] = []
        t = after
        while len(out) < count and (nxt := self.next_after(t, fired + len(out))) is not None:
            out.append(nxt)
            t = nxt
        return out

    def describe(self) -> str:
        parts = [self.spec.describe()]
        if self.only is not None:
            parts.append(f"only {self.only.describe()}")
        if self.start is not None:
            parts.append(f"from {instant(self.start).isoformat()}")
        if self.end is not None:
            parts.append(f"until {instant(self.end).isoformat()}")
        if self.max_count is not None:
            parts.append(f"at most {self.max_count} times")
        return ", ".join(parts)

    def zone(self) -> str:
        """The zone its times are best read in."""
        if isinstance(self.spec, Cron):
            return self.spec.tz
        return self.only.tz if self.only is not None else "UTC"


# -- what users write ----------------------------------------------------------------------


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _bound(value: datetime | None) -> int | None:
    return None if value is None else ms(value)


def at(moment: datetime) -> Timing:
    """Once, at ``moment`` (aware)."""
    return Timing(spec=At(at=ms(moment)))


def after(delay: timedelta | float) -> Timing:
    """Once, ``delay`` (seconds or a timedelta) after the scheduler takes the schedule."""
    return Timing(spec=After(delay=int(_seconds(delay) * 1000)))


def every(
    interval: timedelta | float,
    *,
    phase: timedelta | float = 0,
    start: datetime | None = None,
    end: datetime | None = None,
    max_count: int | None = None,
    only: Calendar | None = None,
) -> Timing:
    """Every ``interval`` (seconds or a timedelta), aligned to the epoch plus ``phase``."""
    spec = Every(every=int(_seconds(interval) * 1000), phase=int(_seconds(phase) * 1000))
    return Timing(spec=spec, start=_bound(start), end=_bound(end), max_count=max_count,
                  only=only)  # fmt: skip


def cron(
    expr: str,
    *,
    tz: str = "UTC",
    start: datetime | None = None,
    end: datetime | None = None,
    max_count: int | None = None,
    only: Calendar | None = None,
) -> Timing:
    """On ``expr`` in zone ``tz`` (see the module docstring for daylight-saving changes)."""
    return Timing(spec=Cron(expr=expr, tz=tz), start=_bound(start), end=_bound(end),
                  max_count=max_count, only=only)  # fmt: skip


def local(moment: datetime | str, tz: str) -> datetime:
    """A wall-clock time in zone ``tz`` (for tests and the CLI): ``"2026-03-29 02:30"``."""
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return value.replace(tzinfo=zone(tz)) if value.tzinfo is None else value


