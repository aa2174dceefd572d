"""TestDriver: unit-test a topology without a broker, on ``memory://`` and virtual time.

Like Kafka Streams' TopologyTestDriver: pipe intents in, and each ``send`` is processed
through the real engine (decode, capability check, reactors, effects, changelogs) before it
returns::

    with TestDriver(topology) as driver:
        driver.send(Deposit(account="a1", amount=100), capabilities=["teller:account/*"])
        assert driver.state("accounts", "a1").balance == 100
        assert [type(i) for i in driver.emitted("ledger")] == [Deposited]
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from packetflow.core.capability import CapabilityLike
from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.engine.client import Client, Received
from packetflow.engine.clock import VirtualClock
from packetflow.engine.memory import MemoryBroker, MemoryTransport
from packetflow.engine.topology import Topology
from packetflow.engine.worker import Worker

T = TypeVar("T")


class TestDriver:
    """Drives one topology synchronously on a private in-memory broker with a virtual clock."""

    __test__ = False  # not a pytest test class

    def __init__(self, topology: Topology, *, start_time: float | datetime | None = None) -> None:
        if isinstance(start_time, datetime):
            start_time = start_time.timestamp()
        self.topology = topology
        self.clock = VirtualClock(start_time) if start_time is not None else VirtualClock()
        self.broker = MemoryBroker(clock=self.clock)
        transport = MemoryTransport("memory://test-driver", broker=self.broker)
        self._runner = asyncio.Runner()
        self.worker = Worker(topology, transport, clock=self.clock, poll_timeout=0.0)
        self.client = Client(transport, topology)
        self._run(self.worker.start())
        self._run(self.client.start())
        self.run_until_idle()  # joins the group and takes every partition

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    # -- input ---------------------------------------------------------------------------

    def send(
        self,
        intent: Intent,
        *,
        context: Context | None = None,
        principal: str | None = None,
        capabilities: Iterable[CapabilityLike] = (),
        topic: str | None = None,
        key: str | None = None,
    ) -> None:
        """Publish ``intent`` (with ``context``, or a new one holding ``capabilities``), process."""
        ctx = context or Context.new(principal, capabilities)
        self._run(self.client.send(intent, context=ctx, topic=topic, key=key))
        self.run_until_idle()

    def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> None:
        """Publish raw bytes to ``topic`` and process them (for bad-input tests)."""
        self._run(self.client.send_raw(topic, value, key=key, headers=headers))
        self.run_until_idle()

    def run_until_idle(self) -> int:
        """Process until no record is left; returns how many were processed."""
        total = 0
        while True:
            n = self._run(self.worker.step(0.0))
            if n == 0:
                return total
            total += n

    def advance_time(self, seconds: float) -> None:
        """Move virtual time forward, then process whatever became due."""
        self.clock.advance(seconds)
        self.run_until_idle()

    # -- output --------------------------------------------------------------------------

    def records(self, topic: str) -> list[Received]:
        """Every record on ``topic`` (logical name), decoded where its type is known."""
        return self._run(self.client.read(topic))

    def emitted(self, topic: str) -> list[Intent]:
        """The intents on ``topic``, in partition order."""
        return [r.intent for r in self.records(topic) if r.intent is not None]

    def dead_letters(self) -> list[Received]:
        return self.records(self.topology.dead_letter_topic)

    def denied(self) -> list[Received]:
        return self.records(self.topology.denied_topic)

    def state(self, reactor: str, key: str | None) -> Any:
        """The state of ``reactor`` for ``key`` (None when the key has none yet)."""
        return self.worker.state(reactor, key)

    def states(self, reactor: str) -> dict[str | None, Any]:
        return self.worker.states(reactor)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.worker.metrics.snapshot()

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._run(self.client.stop())
        self._run(self.worker.stop())
        self._runner.close()

    def __enter__(self) -> TestDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
