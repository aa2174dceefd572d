"""Calendars: open hours per weekday in an IANA time zone, less excluded dates.

Used by schedules (fire only inside business hours) and by time-bounded capabilities (a
grant valid only inside a window). Written as text where it travels in a token:
``mon-fri 09:00-17:00 Europe/Berlin``, several day groups joined by ``;``
(``mon-fri 09:00-12:00,13:00-17:00; sat 10:00-12:00 Europe/Berlin``), excluded dates after
``except`` (``... Europe/Berlin except 2026-12-25,2026-12-26``). Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, model_validator

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (a clear error for an unknown one)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None


def instant(at_ms: int, tz: str = "UTC") -> datetime:
    """An instant in ms since the epoch as an aware datetime in zone ``tz``."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(zone(tz))


class Calendar(BaseModel):
    """Open hours per weekday in a time zone, less excluded dates: ``contains(t)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tz: str = "UTC"
    hours: dict[int, tuple[tuple[int, int], ...]]  # weekday (0 Monday) -> [(from, to)) minutes
    exclude: tuple[date, ...] = ()

    @model_validator(mode="after")
    def _valid(self) -> Calendar:
        zone(self.tz)
        for day, spans in self.hours.items():
            if not 0 <= day <= 6:
                raise ValueError(f"weekday {day} is not 0 (Monday) to 6 (Sunday)")
            for start, end in spans:
                if not 0 <= start < end <= 24 * 60:
                    raise ValueError(f"open hours {start}-{end} (minutes) are not a span of a day")
        return self

    def contains(self, t: int) -> bool:
        """Whether instant ``t`` (ms since the epoch) falls in the open hours."""
        local = instant(t, self.tz)
        if local.date() in self.exclude:
            return False
        minute = local.hour * 60 + local.minute
        return any(a <= minute < b for a, b in self.hours.get(local.weekday(), ()))

    def covers(self, other: Calendar) -> bool:
        """Whether every instant ``other`` is open is open here too (a delegated window may
        only narrow): same zone, each of its spans inside one of ours that day, and our
        excluded dates excluded there as well."""
        if other.tz != self.tz or not set(self.exclude) <= set(other.exclude):
            return False
        return all(
            any(a <= s and e <= b for a, b in self.hours.get(day, ()))
            for day, spans in other.hours.items()
            for s, e in spans
        )

    def text(self) -> str:
        """The calendar as written (see the module docstring); ``parse`` reads it back."""
        groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
        for day, spans in sorted(self.hours.items()):
            groups.setdefault(tuple(sorted(spans)), []).append(day)
        parts = [f"{_days_text(days)} {','.join(f'{_hhmm(a)}-{_hhmm(b)}' for a, b in spans)}"
                 for spans, days in groups.items()]  # fmt: skip
        out = f"{'; '.join(parts)} {self.tz}"
        if self.exclude:
            out += " except " + ",".join(d.isoformat() for d in sorted(self.exclude))
        return out

    def describe(self) -> str:
        return self.text()

    @classmethod
    def parse(cls, text: str) -> Calendar:
        """Read a calendar written as :meth:`text` writes it."""
        return _parse(text.strip())


@lru_cache(maxsize=1024)
def _parse(text: str) -> Calendar:
    body, _, excluded = text.partition(" except ")
    groups, _, tz = body.rpartition(" ")
    if not groups or not tz or _SPAN.match(tz):
        raise ValueError(
            f"window {text!r}: write it as 'mon-fri 09:00-17:00 Europe/Berlin' (the zone last)"
        )
    hours: dict[str, str] = {}
    for group in groups.split(";"):
        days, _, spans = group.strip().partition(" ")
        hours[days] = spans
    exclude = [d for d in excluded.split(",") if d.strip()] if excluded else []
    return business_hours(tz, hours, exclude=exclude)


def business_hours(
    tz: str,
    hours: dict[str, str] | None = None,
    *,
    exclude: Sequence[date | str] = (),
) -> Calendar:
    """Open hours per weekday: ``{"mon-fri": "09:00-17:00", "sat": "10:00-12:00,13:00-15:00"}``
    (default Monday to Friday 09:00-17:00) in zone ``tz``, less the ``exclude`` dates."""
    table: dict[int, list[tuple[int, int]]] = {}
    for days, spans in (hours or {"mon-fri": "09:00-17:00"}).items():
        for day in _days(days):
            for span in spans.split(","):
                found = _SPAN.match(span.strip())
                if found is None:
                    raise ValueError(f"open hours {span!r}: write them as HH:MM-HH:MM")
                h1, m1, h2, m2 = (int(g) for g in found.groups())
                table.setdefault(day, []).append((h1 * 60 + m1, h2 * 60 + m2))
    dates = tuple(d if isinstance(d, date) else date.fromisoformat(d.strip()) for d in exclude)
    return Calendar(tz=tz, hours={d: tuple(s) for d, s in table.items()}, exclude=dates)


def _days(text: str) -> list[int]:
    out: list[int] = []
    for part in text.lower().split(","):
        first, _, last = part.strip().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"weekdays {text!r}: use mon..sun, ranges like mon-fri")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    return out


def _days_text(days: list[int]) -> str:
    """``[0, 1, 2, 3, 4]`` as ``mon-fri``, ``[0, 2]`` as ``mon,wed``."""
    runs: list[list[int]] = []
    for day in days:
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    return ",".join(DAYS[r[0]] if len(r) == 1 else f"{DAYS[r[0]]}-{DAYS[r[-1]]}" for r in runs)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
