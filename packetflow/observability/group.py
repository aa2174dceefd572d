"""The whole group of a topology's workers, from what each announces on the members topic
(``engine.runtime.members``): per reactor and agent, records processed, the rate between
two looks, errors, and what was set aside by reason; per worker, its partitions, lag and
buffers. What ``packetflow top`` shows every second and ``packetflow inspect`` once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from packetflow.engine.client import Client
from packetflow.engine.runtime.members import Member
from packetflow.engine.transport import Record


def members_of(records: list[Record]) -> dict[str, Member]:
    """The latest announcement of each worker still there (a tombstone: it left)."""
    out: dict[str, Member] = {}
    for record in records:
        if record.key is None:
            continue
        key = record.key.decode(errors="replace")
        if record.value is None:
            out.pop(key, None)
            continue
        try:
            out[key] = Member.decode(record.value)
        except (ValueError, KeyError, TypeError):
            continue  # not an announcement: the workers' roster refuses it too
    return out


async def read_members(client: Client) -> dict[str, Member]:
    records: list[Record] = []
    topology = client.topology
    await client.transport.read_topic(topology.physical(topology.members_topic), records.append)
    return members_of(records)


@dataclass
class Group:
    """One look at the group; ``rates`` compare it with the look before."""

    members: dict[str, Member]
    reactors: list[str]
    processed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    denied: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    rates: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, members: dict[str, Member], reactors: list[str],
           before: Group | None = None) -> Group:  # fmt: skip
        group = cls(members, reactors)
        for m in members.values():
            c = m.counters
            group.processed.update(c.get("processed", {}))
            group.errors.update(c.get("errors", {}))
            group.dead_lettered.update(c.get("dead_lettered", {}))
            group.denied.update(c.get("denied", {}))
            group.dropped.update(c.get("dropped", {}))
        if before is not None:
            span = group.newest() - before.newest()
            if span > 0:
                group.rates = {
                    r: max(0.0, (group.processed[r] - before.processed[r]) / span)
                    for r in reactors
                }
        return group

    def newest(self) -> float:
        return max((m.at for m in self.members.values()), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "reactors": {
                r: {"processed": self.processed[r], "errors": self.errors[r],
                    "dropped": self.dropped[r], "per_second": self.rates.get(r)}
                for r in self.reactors
            },
            "dead_lettered": dict(self.dead_lettered),
            "denied": dict(self.denied),
            "workers": {
                m.instance_id: {
                    "host": m.host, "pid": m.pid, "at": m.at, "lag": m.lag,
                    "buffered": m.buffered,
                    "partitions": sum(len(p) for p in m.partitions.values()),
                    "advertised": m.advertised,
                }
                for m in self.members.values()
            },
        }  # fmt: skip
