"""TestDriver: unit-test a topology without a broker, on ``memory://`` and virtual time.

Like Kafka Streams' TopologyTestDriver: pipe intents in, and each ``send`` is processed
through the real engine (decode, capability check, reactors, effects, changelogs) before it
returns::

    with TestDriver(topology) as driver:
        teller = driver.issue("teller-1", ["teller:account/*"])
        driver.send(Deposit(account="a1", amount=100), token=teller)
        assert driver.state("accounts", "a1").balance == 100
        assert [type(i) for i in driver.emitted("ledger")] == [Deposited]

Every driver generates its own signing key (``driver.key``) and its worker trusts it, plus
the topology's explicitly trusted keys and ``keys=`` (never the keys directory on disk), so
``issue`` and ``delegate`` make tokens that work, on the driver's virtual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from packetflow.core.capability import CapabilityLike
from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.tokens import TTL, Issuer, KeyPair, decode_token, public_keys
from packetflow.engine.client import Client, Received
from packetflow.engine.clock import VirtualClock
from packetflow.engine.ingress import holder_of
from packetflow.engine.runtime.worker import Worker
from packetflow.engine.topology import Topology
from packetflow.engine.transport.memory import MemoryBroker, MemoryTransport

T = TypeVar("T")
# (topic, partition, key, value, headers): a record on the broker before the driver starts
Preloaded = tuple[str, int | None, bytes | None, bytes | None, list[tuple[str, bytes]]]


class TestDriver:
    """Drives one topology synchronously on a private in-memory broker with a virtual clock."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        topology: Topology,
        *,
        start_time: float | datetime | None = None,
        keys: Iterable[KeyPair] | dict[str, Any] = (),
        preload: Iterable[Preloaded] = (),
    ) -> None:
        """``preload``: records already on the broker when the worker starts, as
        ``(topic, partition, key, value, headers)`` with physical topic names (changelogs
        written elsewhere, a backlog)."""
        if isinstance(start_time, datetime):
            start_time = start_time.timestamp()
        self.topology = topology
        self.clock = VirtualClock(start_time) if start_time is not None else VirtualClock()
        self.broker = MemoryBroker(clock=self.clock)
        for topic, partition, key, value, headers in preload:
            self.broker.create_topic(topic, topology.topics.get(topic, topology.default_partitions))
            self.broker.append(topic, value, key, headers, partition)
        transport = MemoryTransport("memory://test-driver", broker=self.broker)
        self.key = KeyPair.generate("test-driver")
        self.issuer = Issuer(
            self.key, name="test-driver", clock=self.clock.time, hierarchy=topology.hierarchy
        )
        trusted = {self.key.kid: self.key.public, **public_keys(keys)}
        self._runner = asyncio.Runner()
        self.worker = Worker(
            topology,
            transport,
            clock=self.clock,
            poll_timeout=0.0,
            tick_interval=0.0,
            security=topology.security.trusting(trusted),
        )
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
        token: str | None = None,
        topic: str | None = None,
        key: str | None = None,
    ) -> None:
        """Publish ``intent`` and process it.

        With ``context``, or a new one carrying ``token`` (its holder is the principal unless
        ``principal`` is given) or plain ``capabilities`` (only for topologies that accept
        unsigned capabilities).
        """
        if context is None:
            if token is not None and principal is None:
                principal = holder_of(token)
            context = Context.new(principal, capabilities, token=token)
        self._run(self.client.send(intent, context=context, topic=topic, key=key))
        self.run_until_idle()

    def send_many(
        self,
        intents: Iterable[Intent | tuple[Intent, Context]],
        *,
        token: str | None = None,
        principal: str | None = None,
    ) -> int:
        """Publish many intents (each with its own context, or one made from ``token``), then
        process them all; returns how many were sent. Much faster than ``send`` one by one."""
        if token is not None and principal is None:
            principal = holder_of(token)
        items = [
            item if isinstance(item, tuple) else (item, Context.new(principal, token=token))
            for item in intents
        ]
        self._run(self.client.send_many(items))
        self.run_until_idle()
        return len(items)

    # -- tokens --------------------------------------------------------------------------

    def issue(
        self,
        holder: str,
        grants: Iterable[CapabilityLike],
        *,
        ttl: TTL = 3600,
        not_before: float | None = None,
        audit: bool = True,
    ) -> str:
        """A token for ``holder`` signed by the driver's key, valid from now (virtual time)."""
        token = self.issuer.issue(holder, grants, ttl=ttl, not_before=not_before)
        if audit:
            self._run(self.client.record_issued(token, by="test-driver", at=self.clock.time()))
        return token

    def delegate(
        self,
        parent: str,
        holder: str,
        grants: Iterable[CapabilityLike],
        *,
        ttl: TTL = 3600,
        audit: bool = True,
    ) -> str:
        """A token for ``holder`` with a subset of ``parent``'s grants (checked eagerly)."""
        token = self.issuer.delegate(parent, holder, grants, ttl=ttl)
        if audit:
            self._run(self.client.record_issued(token, by=holder_of(parent), at=self.clock.time()))
        return token

    def revoke(
        self,
        *,
        token_id: str | None = None,
        token: str | None = None,
        holder: str | None = None,
        by: str | None = "test-driver",
        reason: str = "",
    ) -> None:
        """Revoke a token (by id or the token itself) or a holder; applies to the next record."""
        if token is not None:
            token_id = decode_token(token).token_id
        self._run(
            self.client.revoke(
                token_id=token_id, holder=holder, by=by, reason=reason, at=self.clock.time()
            )
        )
        self.run_until_idle()

    def audit(self) -> list[dict[str, Any]]:
        """Every event on the audit topic so far (issued, delegated, revoked, denied, ...)."""
        return self._run(self.client.read_audit())

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
        return self._run(self._until_idle())

    async def _until_idle(self) -> int:
        worker, total = self.worker, 0
        while True:
            n = await worker.step(0.0)
            total += n
            if n:
                continue
            if not worker.buffers_idle():
                await asyncio.sleep(0)  # let buffered reactors drain
            elif await worker.lag() == 0:  # windows closing may have emitted to our topics
                return total

    def advance(self, seconds: float | timedelta) -> None:
        """Move virtual time forward by ``seconds`` (or a timedelta), jumping from one due
        clock timer to the next on the way (each fires at its own due time, in order), and
        process whatever became due."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError("virtual time only moves forward")
        target = self.clock.time() + seconds
        while (due := self.worker.next_timer()) is not None and due <= target:
            before = self.clock.time()
            self.clock.advance(max(0.0, due - before))
            self.run_until_idle()
            if self.worker.next_timer() == due and self.clock.time() == before:
                raise RuntimeError(f"a timer due at {due} did not fire")  # never loop forever
        self.clock.advance(max(0.0, target - self.clock.time()))
        self.run_until_idle()

    advance_time = advance  # the name of the first releases

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

    def inspect(self, agent: str, key: str | None) -> Any:
        """All ``agent`` holds for ``key`` (``AgentRuntime.inspect``)."""
        return self.worker.inspect(agent, key)

    def actor_state(self, actor_type: str, actor_id: str) -> Any:
        """An actor as an operator sees it (``packetflow.actors.ActorView``: state, status,
        restarts, stash, pending asks, reminders): :meth:`inspect` by another name."""
        return self.inspect(actor_type, actor_id)

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

