"""Topics every worker reads whole, outside the consumer group, into its agents (global
tables): read to their end before the worker processes anything, then followed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from packetflow.engine.agent import AgentRuntime
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Follower, Record, Transport

log = logging.getLogger("packetflow.worker")


class TableFollowers:
    """The followed topics of one worker's agents (``AgentSpec.followed``)."""

    def __init__(
        self, transport: Transport, topology: Topology, agents: dict[str, AgentRuntime]
    ) -> None:
        self._transport = transport
        self._topology = topology
        self._agents = agents
        self._followers: list[tuple[Follower, str]] = []  # (follower, agent name)
        self._queued: list[tuple[str, list[Record]]] = []  # read in the background (kafka)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read what agents follow to its end, then keep following it."""
        topology = self._topology
        for name, spec in topology.agents.items():
            for topic in spec.followed(topology.names):
                physical = topology.physical(topic)
                follower = self._transport.follow(
                    physical, await self._transport.partitions_for(physical)
                )
                await follower.start()
                self._followers.append((follower, name))
                agent = self._agents[name]
                for record in await follower.catch_up():
                    agent.follow(record)
        if any(not f.immediate for f, _ in self._followers):
            self._task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        """Background task (kafka://): queue followed records for the next batch to apply."""
        while True:
            for follower, name in self._followers:
                try:
                    records = await follower.poll(0.2)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep following through a broker hiccup
                    log.warning("following tables: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(1.0)
                    continue
                if records:
                    self._queued.append((name, records))

    def apply(self) -> None:
        """Hand the agents what arrived since the last batch."""
        for follower, name in self._followers:
            if follower.immediate:
                records = follower.poll_nowait()
                if records:
                    self._queued.append((name, records))
        queued, self._queued = self._queued, []
        for name, records in queued:
            agent = self._agents[name]
            for record in records:
                agent.follow(record)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for follower, _ in self._followers:
            await follower.stop()
        self._followers = []
