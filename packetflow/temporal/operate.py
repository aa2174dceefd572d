"""What the changelog says of each schedule (as of the last commit), without asking a
worker: what ``packetflow schedule list|show`` prints, with the next fire times in the
schedule's zone and in UTC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packetflow.engine.changelogs import latest_values, store_info
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Transport
from packetflow.temporal.agent import SchedulerSpec
from packetflow.temporal.timing import Timing, instant


@dataclass
class ScheduleView:
    """One schedule as stored."""

    id: str
    raw: dict[str, Any]

    @property
    def timing(self) -> Timing:
        return Timing.model_validate(self.raw["timing"])

    def next_times(self, count: int) -> list[int]:
        """The next ``count`` fire times (ms), from the stored next one."""
        nxt = self.raw.get("next")
        if nxt is None or "paused" in self.raw:
            return []
        return [nxt, *self.timing.times(nxt, count - 1, self.raw["passed"] + 1)][:count]

    def as_dict(self, count: int = 5) -> dict[str, Any]:
        timing = self.timing
        tz = timing.zone()
        authority = self.raw.get("authority", {})
        expires = authority.get("expires")
        return {
            "id": self.id,
            "intent_type": self.raw["intent_type"],
            "data": self.raw["data"],
            "resource": self.raw["resource"],
            "when": timing.describe(),
            "misfire": self.raw["misfire"],
            "catch_up_s": self.raw["catch_up"] / 1000,
            "status": "paused" if "paused" in self.raw else "active",
            "note": self.raw.get("paused"),
            "passed": self.raw["passed"],
            "missed": self.raw["missed"],
            "overlap": self.raw.get("overlap", "allow_all"),
            "skipped": self.raw.get("skipped", 0),
            # the firing whose answer is awaited, and the one held back behind it
            "running": _when(self.raw.get("running", {}).get("at"), tz),
            "buffered": _when((self.raw.get("buffered") or [None])[0], tz),
            "by": self.raw.get("by"),
            "token_id": authority.get("token_id"),
            "token_expires": None if expires is None else instant(int(expires * 1000)).isoformat(),
            "next": [_when(t, tz) for t in self.next_times(count)],
        }


def _when(t: int | None, tz: str) -> dict[str, str] | None:
    if t is None:
        return None
    return {"local": instant(t, tz).isoformat(), "utc": instant(t).isoformat()}


async def read_schedules(transport: Transport, topology: Topology) -> list[ScheduleView]:
    """Every schedule of the topology's scheduler, by id."""
    spec = next((a for a in topology.agents.values() if isinstance(a, SchedulerSpec)), None)
    if spec is None:
        raise LookupError(f"{topology.name} has no scheduler (packetflow.temporal.scheduler)")
    values = await latest_values(transport, topology, store_info(topology, spec.name))
    return [ScheduleView(k, v) for k, v in sorted(values.items()) if isinstance(v, dict)]
