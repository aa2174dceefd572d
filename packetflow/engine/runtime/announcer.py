"""The worker service that announces its worker on the members topic (see runtime.members)
and keeps the worker's roster current by reading that topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from packetflow.engine.codec import MAC_HEADER, TYPE_HEADER
from packetflow.engine.runtime.members import ANNOUNCE_EVERY, MEMBER_TYPE, Member, Roster
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.security.seal import Sealer
from packetflow.engine.transport import Follower, Producer, Record, Transport
from packetflow.engine.transport.following import follow_forever

log = logging.getLogger("packetflow.members")

WATCH_EVERY = 0.5  # s: how often the assignment is compared with the last announced one


class Announcer:
    """A worker service: announces its worker and keeps the roster current."""

    def __init__(
        self,
        topic: str,
        roster: Roster,
        sealer: Sealer | None,
        advertised: Mapping[str, Any],
        interval: float = ANNOUNCE_EVERY,
    ) -> None:
        self.topic = topic  # physical
        self.roster = roster
        self.interval = interval
        self._sealer = sealer
        self._advertised = advertised  # the worker's dict: services add to it
        self._producer: Producer | None = None
        self._follower: Follower | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._view: WorkerView | None = None
        self._host = socket.gethostname()

    async def start(self, view: WorkerView, transport: Transport) -> None:
        self._view = view
        follower = transport.follow(self.topic, 1)
        await follower.start()
        self._follower = follower
        self._apply(await follower.catch_up())
        producer = transport.producer()
        await producer.start()
        self._producer = producer
        await self.announce()
        self._tasks = [
            asyncio.create_task(follow_forever(follower, self._apply, "members", log)),
            asyncio.create_task(self._announce_now_and_then()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._producer is not None:
            with contextlib.suppress(Exception):  # gone: the roster's age limit says so too
                await self._send(None)
                await self._producer.flush()
            await self._producer.stop()
            self._producer = None
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None

    def me(self) -> Member:
        view = self._view
        assert view is not None
        partitions: dict[str, list[int]] = {}
        physical = {view.topology.physical(t): t for t in view.topology.source_topics()}
        for tp in sorted(view.assignment):
            partitions.setdefault(physical.get(tp.topic, tp.topic), []).append(tp.partition)
        return Member(
            instance_id=view.instance_id,
            host=self._host,
            pid=os.getpid(),
            at=view.clock.time(),
            partitions=partitions,
            buffered=sum(view.metrics.buffered.values()),
            lag=0,
            advertised=dict(self._advertised),
            counters=_counters(view),
        )

    async def announce(self) -> None:
        view = self._view
        assert view is not None
        member = self.me()
        try:
            lag = await view.lag()
        except Exception:  # the broker is away: announce what is known
            lag = 0
        member = Member(**{**asdict(member), "lag": lag})
        await self._send(member.encode())

    async def _send(self, value: bytes | None) -> None:
        producer, view = self._producer, self._view
        assert producer is not None and view is not None
        key = view.instance_id.encode()
        headers: list[tuple[str, bytes]] = [(TYPE_HEADER, MEMBER_TYPE)]
        if self._sealer is not None:
            mac = self._sealer.seal(self.topic, key, MEMBER_TYPE, value or b"", None, None)
            headers.append((MAC_HEADER, mac))
        ack = await producer.send(self.topic, value, key, headers)
        await ack

    def _apply(self, records: list[Record]) -> None:
        for record in records:
            self.roster.apply(record)

    async def _announce_now_and_then(self) -> None:
        view = self._view
        assert view is not None
        loop = asyncio.get_running_loop()
        announced, last = view.assignment, loop.time()
        while True:
            await asyncio.sleep(WATCH_EVERY)
            current = view.assignment
            if current == announced and loop.time() - last < self.interval:
                continue
            try:
                await self.announce()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # said once an outage is over, by the worker
                log.debug("announcing %s: %s", view.instance_id, exc)
                continue
            announced, last = current, loop.time()


def _counters(view: WorkerView) -> dict[str, Any]:
    m = view.metrics
    return {
        "consumed": m.consumed,
        "processed": dict(m.processed),
        "errors": dict(m.errors),
        "dead_lettered": dict(m.dead_lettered),
        "denied": dict(m.denied_reasons),
        "dropped": dict(m.dropped),
    }
