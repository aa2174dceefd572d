"""Who runs a topology: each worker announces itself on ``<topology>.members``.

The topic is compacted, with one partition, keyed by the worker's instance id: its last
announcement is what the topology knows of it. A worker announces when it starts, when its
assignment changes, and every ``interval`` seconds (its load moves); when it stops it writes
a tombstone. An announcement names the instance, its assigned partitions, its load (records
buffered, consumer lag), when it was made and whatever services advertise (the web
server's address, say). Every worker reads the topic whole into a :class:`Roster`: actors'
least-loaded router, the web's query forwarding and ``packetflow top`` read it. A member
whose last word is older than three intervals is taken for gone (a crash writes no
tombstone). Announcements are sealed like the engine's other records, and a roster that
holds the worker secret takes only sealed ones. This module is the data and the roster;
the announcing worker service is :mod:`packetflow.engine.runtime.announcer`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from packetflow.engine.clock import Clock
from packetflow.engine.codec import MAC_HEADER, header
from packetflow.engine.security.seal import Sealer
from packetflow.engine.transport import Record

log = logging.getLogger("packetflow.members")

MEMBER_TYPE = b"packetflow.Member"
ANNOUNCE_EVERY = 5.0  # s: a worker announces itself at least this often


@dataclass(frozen=True)
class Member:
    """One worker, as it last announced itself."""

    instance_id: str
    host: str
    pid: int
    at: float  # clock seconds of the announcement
    partitions: dict[str, list[int]]  # logical source topic -> partitions it owns
    buffered: int = 0  # intents waiting in its backpressure buffers
    lag: int = 0  # records not yet consumed in its partitions
    advertised: dict[str, Any] = field(default_factory=dict)  # e.g. {"http": "host:port"}
    # what it has done since it started: records consumed, per reactor processed and errors,
    # set aside by reason (what ``packetflow top`` shows for the whole group)
    counters: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> Member:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a member announcement is a JSON object")
        return cls(
            instance_id=str(data["instance_id"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            at=float(data["at"]),
            partitions={str(t): [int(p) for p in ps] for t, ps in data["partitions"].items()},
            buffered=int(data.get("buffered", 0)),
            lag=int(data.get("lag", 0)),
            advertised=dict(data.get("advertised") or {}),
            counters=dict(data.get("counters") or {}),
        )


class Roster:
    """The topology's members as announced (see the module docstring)."""

    def __init__(self, clock: Clock, interval: float, sealer: Sealer | None) -> None:
        self.clock = clock
        self.interval = interval
        self._sealer = sealer
        self._members: dict[str, Member] = {}

    def apply(self, record: Record) -> None:
        key = record.key
        if key is None:
            return
        if self._sealer is not None:
            why = self._sealer.verify(
                header(record.headers, MAC_HEADER),
                record.topic,
                key,
                MEMBER_TYPE,
                record.value or b"",
                None,
                None,
            )
            if why is not None:
                log.warning("%s: an announcement that is not a worker's (%s)", record.topic, why)
                return
        if record.value is None:
            self._members.pop(key.decode(errors="replace"), None)
            return
        try:
            member = Member.decode(record.value)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s: an unreadable announcement: %s", record.topic, exc)
            return
        self._members[member.instance_id] = member

    def members(self) -> list[Member]:
        """Members heard from within three intervals, by instance id."""
        oldest = self.clock.time() - 3 * self.interval
        return sorted(
            (m for m in self._members.values() if m.at >= oldest), key=lambda m: m.instance_id
        )
