"""The MCP client agent: carries out the calls recorded on ``<topology>.mcp.calls`` and sends
each result back to its caller, once, surviving worker crashes.

How a call goes. A reactor returns an :class:`~packetflow.engine.mcpcall.McpCall`; the
effect's handler (``declare.py``) records it as an :class:`McpCallRecord` on the calls topic,
keyed by a call id derived from the calling intent, sealed, with the caller's authority and
a :class:`Caller` (topic and key of the calling record: the engine's choice) in its context.
The worker owning that partition authorises it like any record (``call:mcp/<server>/<tool>``;
refused, it goes to the denied topic and the engine's Refused, sent because the record names
this topic as ``reply_to``, comes back here and goes on to the caller as ``denied``). Then:

1. :meth:`handle` stores the call as *pending* in the agent's changelogged store; that write
   is the batch's, committed with the call record's offset (atomically under exactly-once).
2. The call starts only at a later tick (:meth:`tick` starts what was accepted before the
   previous tick): ticks run inside a worker step, after its records, and a step runs only
   once the previous one committed, or after a rewind that told the agent (``assigned``).
   So a call is on the wire only once "it may have started" is durable.
3. It runs in a task of its own (a slow tool holds no partition back), on the one session per
   server this worker keeps (``servers.Connection``), retried with backoff only when the
   tool is idempotent (the server's ``idempotent_hint``, or the declaration).
4. A later tick sends its :class:`~packetflow.engine.mcpcall.McpResult` to the caller and
   stores the call as *done* (with the result) in that same batch; under exactly-once both
   commit together (at least once, the result is acknowledged before the changelog is
   written). *done* is kept ``keep_results`` seconds, so a duplicate call record (an
   at-least-once caller run twice: the same call id) gets the recorded result again.

After a crash the next owner restores the store and finds the calls still pending: each
may have reached the tool. An idempotent one is called again; any other comes back as
``unknown-outcome`` and is never called again. A call never stored as pending was never
started (step 2), and its record is read again: it simply starts.

A call whose partition moves to another worker (a rebalance, a stop) is cancelled here and
recovered there like one interrupted by a crash (so is one whose result was not yet sent:
a rolling restart makes non-idempotent calls in flight ``unknown-outcome``). At least once
(not exactly-once), a crash between sending a result and writing *done* sends the call's
result again (the same ``call_id``; ``unknown-outcome`` the second time for a tool that is
not idempotent): a caller takes the first result of a call id. A broker failure that makes
the worker go back to its last commit (a rewind) keeps calls running; ``assigned`` then
reconciles them with the restored store (results not committed are sent again, records not
committed come again). ``TestDriver.run_until_idle`` does not wait for calls in flight
(they are real I/O): test calls with a running worker, as tests/mcp does.

Why not a "started" marker written before calling (a compacted topic, produced outside the
batch's transaction and followed by every worker): it needs a producer outside the
transaction, which agents are not given, a topic every worker reads whole, and tombstones.
Waiting for the commit costs one step of latency (a poll interval on an idle worker) and
keeps everything in the store the engine already restores. Its one imprecision: a worker
dying between the commit and the call's first byte makes a non-idempotent call
``unknown-outcome`` although it never ran (unknown is still the truth the survivor knows).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

from packetflow.core.capability import Capability
from packetflow.core.context import Context
from packetflow.core.effects import Emit
from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.core.replies import Refused
from packetflow.engine.agent import (
    AgentRuntime,
    AgentServices,
    AgentSpec,
    Origin,
    StoreDecl,
    Timer,
)
from packetflow.engine.mcpcall import McpResult
from packetflow.engine.transport import BrokerError, Record
from packetflow.mcp.client.calls import DENIALS, Caller, McpCallRecord, execute, result
from packetflow.mcp.client.servers import Connection, ServerDecl, describe

log = logging.getLogger("packetflow.mcp.client")

CALLS = StoreDecl(
    "", StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="mcp-call")
)
PENDING, DONE = "pending", "done"
FORGET = "forget"  # the timer ending a done call's retention
KEEP_RESULTS = 3600.0  # s a done call's result is kept for duplicates
UNKNOWN = (
    "the worker carrying this call out stopped before its result was recorded: the tool may "
    "or may not have run, and it is not idempotent, so it is not called again"
)

State = Literal["queued", "running", "finished", "emitted"]


@dataclass(frozen=True, kw_only=True)
class McpClientSpec(AgentSpec):
    """The topology's MCP client (see :func:`packetflow.mcp.client.mcp_servers`)."""

    kind: ClassVar[str] = "mcp-client"
    timers: ClassVar[bool] = True  # a done call's retention
    readable: ClassVar[bool] = False  # calls and results are their callers' alone
    takes_replies: bool = True  # the engine's Refused of a call record comes back here
    any_answer: bool = True
    servers: Mapping[str, ServerDecl] = field(default_factory=dict)
    keep_results: float = KEEP_RESULTS

    def describe(self) -> dict[str, Any]:
        return {
            "mcp_servers": describe(self.servers),
            "calls": "keyed by call id: pending until its result is sent, then kept "
            f"{self.keep_results:g}s",
        }

    def runtime(self, services: AgentServices) -> McpClientRuntime:
        return McpClientRuntime(self, services)


@dataclass(eq=False)
class _Call:
    """A call this worker knows of, between its record and its committed result."""

    partition: int
    key: bytes
    call: McpCallRecord
    context: Context  # the call record's, as authorised
    gen: int  # the tick generation it was accepted (queued) or its result sent (emitted) in
    state: State
    trace: contextvars.Context | None = None  # where its span hangs (the record's handling)
    task: asyncio.Task[None] | None = None
    result: McpResult | None = None


class McpClientRuntime(AgentRuntime):
    """One worker's share of the calls: those of the partitions it owns."""

    ticks: ClassVar[bool] = True

    def __init__(self, spec: McpClientSpec, services: AgentServices) -> None:
        self.spec = spec
        self.services = services
        self.store = services.store
        self.own_topic = services.source_topic
        self.connections: dict[str, Connection] = {}
        self._calls: dict[str, _Call] = {}
        self._gen = 0
        self._tracing = getattr(services.effects, "tracing", None)  # the worker's, if on
        self._metrics = services.metrics

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.services.seal is None:
            raise RuntimeError(
                f"{self.spec.name} needs a worker secret to seal MCP results "
                "(packetflow caps secret, in the keys directory)"
            )
        # credentials are read now, from the worker's environment (missing: it stops)
        self.connections = {
            name: Connection(decl.resolve(name)) for name, decl in self.spec.servers.items()
        }

    async def stop(self) -> None:
        tasks = [c.task for c in self._calls.values() if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._calls.clear()
        for connection in self.connections.values():
            await connection.close()

    # -- records -------------------------------------------------------------------------

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        if isinstance(intent, McpCallRecord):
            await self._accept(record, intent, context)
        elif isinstance(intent, Refused) and context.reply_to == self.own_topic:
            await self._refused(intent, context)  # sealed: the processor checked it
        else:
            log.info("%s: ignored a %s (no call waits for it)", self.spec.name,
                     type(intent).intent_type)  # fmt: skip

    def _without_token(self, context: Context) -> Context:
        """``context`` as it may be kept: the token's id, grants and validity (sealed as
        vouched capabilities when the result is sent), never the token itself."""
        authority = self.services.authority
        if context.token is None or authority is None:
            return context
        kept = authority.keep(context)
        return context.model_copy(update={
            "token": None, "principal": kept.principal,
            "capabilities": tuple(Capability.parse(g) for g in kept.grants),
            "baggage": {**context.baggage, **kept.baggage()},
        })  # fmt: skip

    async def _accept(self, record: Record, call: McpCallRecord, context: Context) -> None:
        context = self._without_token(context)
        p, key = record.partition, record.key or b""
        if key != call.call_id.encode():
            raise ValueError(f"call record {call.call_id} is keyed {key!r}, not by its id")
        if call.server not in self.connections:
            raise ValueError(f"no MCP server {call.server!r} is declared")
        entry = self.store.peek(p, key)
        if entry is not None and entry["state"] == DONE:  # the same call again (a caller
            # run twice, at least once): its recorded result, not a second call
            log.info("MCP call %s is done: its result is sent again", call.call_id)
            await self._emit(key, McpResult.model_validate(entry["result"]),
                             Context.model_validate_json(entry["context"]))  # fmt: skip
            return
        if entry is not None:
            if call.call_id not in self._calls:
                self._recover(p, key, entry)
            return  # pending: known already
        self.store.put(p, key, {
            "state": PENDING,
            "call": call.model_dump(mode="json"),
            "context": context.model_dump_json(),
            "at": self._now(),
        })  # fmt: skip
        self._calls[call.call_id] = _Call(
            p, key, call, context, self._gen, "queued", trace=contextvars.copy_context()
        )

    async def _refused(self, refused: Refused, context: Context) -> None:
        """The engine refused a call record (its authority, or the record itself): the
        caller learns it as a result."""
        caller = Caller.of(context)
        if caller is None or context.requester is None:
            log.warning("%s: a Refused that names no caller: %s", self.spec.name, refused.error)
            return
        outcome = "denied" if refused.reason in DENIALS else "error"
        answer = McpResult(
            call_id=context.requester, server=caller.server, tool=caller.tool,
            outcome=outcome, error=f"{refused.reason}: {refused.error}",
        )  # fmt: skip
        self._count(answer)
        await self._emit(context.requester.encode(), answer, context)

    # -- time ----------------------------------------------------------------------------

    async def tick(self) -> None:
        """Forget results committed by now, send those that came, start what is durable."""
        if not self._calls:
            self._gen += 1
            return
        owned = self.services.owned()
        for call_id, call in list(self._calls.items()):
            if call.state == "emitted" and call.gen < self._gen:
                del self._calls[call_id]  # its batch committed (else a rewind said so)
        finished = [c for c in self._calls.values() if c.state == "finished"]
        for call in finished:
            if call.partition in owned:
                await self._finish(call)
        if finished:  # the results are acknowledged before the changelog saying them done
            await self.services.producer.flush()  # (at least once: no input to read again)
        for call in [c for c in self._calls.values() if c.state == "queued"]:
            if call.gen < self._gen and call.partition in owned:
                self._start(call)
        self._gen += 1

    def _start(self, call: _Call) -> None:
        call.state = "running"
        call.task = asyncio.create_task(
            self._run(call), name=f"mcp call {call.call.call_id}", context=call.trace
        )

    async def _run(self, call: _Call, *, idempotent: bool | None = None) -> None:
        record = call.call
        connection = self.connections[record.server]
        began = time.monotonic()
        deadline = began + record.timeout  # the whole call, asking for the tool's hints too
        try:
            if idempotent is None:
                try:
                    idempotent = await asyncio.wait_for(
                        connection.idempotent(record.tool), record.timeout
                    )
                except Exception:
                    idempotent = False  # execute() reports the server unavailable
            within = max(deadline - time.monotonic(), 0.0)
            if self._tracing is not None:
                with self._tracing.effect(f"mcp {record.server}/{record.tool}"):
                    answer = await execute(connection, record, idempotent, within)
            else:
                answer = await execute(connection, record, idempotent, within)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fault of ours: the caller still gets an answer
            log.exception("MCP call %s failed", record.call_id)
            answer = result(record, "unknown-outcome" if not idempotent else "error",
                            f"{type(exc).__name__}: {exc}")  # fmt: skip
        self._metrics.histogram(
            "packetflow_mcp_client_call_seconds", "how long MCP tool calls took",
            server=record.server, tool=record.tool,
        ).observe(time.monotonic() - began)  # fmt: skip
        if answer.attempts > 1:
            self._metrics.counter(
                "packetflow_mcp_client_retries_total", "MCP tool calls made again (idempotent)",
                server=record.server, tool=record.tool,
            ).inc(answer.attempts - 1)  # fmt: skip
        call.result, call.state = answer, "finished"

    async def _finish(self, call: _Call) -> None:
        """Send the call's result to its caller and store it done (one batch)."""
        answer = call.result
        assert answer is not None
        try:
            await self._emit(call.key, answer, call.context)
        except BrokerError:
            raise
        except Exception as exc:  # too large for the caller's topic, say: say so instead
            log.warning("MCP call %s: its result cannot be sent: %s", answer.call_id, exc)
            answer = answer.model_copy(update={
                "outcome": "error", "content": [], "structured": None,
                "error": f"the result cannot be sent: {exc}"[:2000],
            })  # fmt: skip
            try:
                await self._emit(call.key, answer, call.context)
            except BrokerError:
                raise
            except Exception as again:
                log.error("MCP call %s: no result could be sent: %s", answer.call_id, again)
        self.store.put(call.partition, call.key, {
            "state": DONE,
            "result": answer.model_dump(mode="json"),
            "context": call.context.model_dump_json(),
            "at": self._now(),
        })  # fmt: skip
        keep = self._now() + int(self.spec.keep_results * 1000)
        self.services.timers.set(call.partition, call.key, FORGET, keep, clock=True)
        self._count(answer)
        call.state, call.gen = "emitted", self._gen

    async def _emit(self, key: bytes, answer: McpResult, context: Context) -> None:
        caller = Caller.of(context)
        if caller is None:
            raise ValueError(f"MCP call {answer.call_id} names no caller")
        out = caller.context(context, self.spec.name)
        emit = Emit(answer, caller.topic, caller.key, out)
        await self.services.effects.run_effects([emit], Origin(self.spec.name, out, key))

    def _count(self, answer: McpResult) -> None:
        self._metrics.counter(
            "packetflow_mcp_client_calls_total", "MCP tool calls, by what they came to",
            server=answer.server, tool=answer.tool, outcome=answer.outcome,
        ).inc()  # fmt: skip

    # -- ownership -----------------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        """Take the restored store as the truth: pending calls nobody here runs were
        interrupted (recovered), accepted ones it does not hold were never committed
        (their records are read again), results it does not show done were not sent."""
        pending: set[bytes] = set()
        for p in partitions:
            for key, entry in self.store.items(p):
                if entry.get("state") != PENDING:
                    continue
                pending.add(key)
                call = self._calls.get(key.decode())
                if call is None:
                    self._recover(p, key, entry)
                elif call.state == "emitted":  # a rewind took its batch back: again
                    call.state = "finished"
        for call_id, call in list(self._calls.items()):
            if call.partition in partitions and call.key not in pending and call.state == "queued":
                del self._calls[call_id]  # never committed: its record comes again

    async def revoked(self, partitions: set[int]) -> None:
        """Partitions gone to another worker: their calls here end (that worker recovers
        them). Partitions only rewound (still owned) keep theirs."""
        owned = self.services.owned()
        for call_id, call in list(self._calls.items()):
            if call.partition in partitions and call.partition not in owned:
                if call.task is not None:
                    call.task.cancel()
                del self._calls[call_id]

    def _recover(self, p: int, key: bytes, entry: dict[str, Any]) -> None:
        """A pending call found in the store, which may have reached its tool."""
        record = McpCallRecord.model_validate(entry["call"])
        context = Context.model_validate_json(entry["context"])
        call = _Call(p, key, record, context, self._gen, "running")
        self._calls[record.call_id] = call
        call.task = asyncio.create_task(self._resume(call), name=f"mcp recover {record.call_id}")

    async def _resume(self, call: _Call) -> None:
        record = call.call
        connection = self.connections.get(record.server)
        idempotent = False
        if connection is not None:
            try:
                idempotent = await connection.idempotent(record.tool)
            except Exception as exc:  # unknown: then it must not be called again
                log.warning("MCP call %s: server %s unreachable to know whether %s is "
                            "idempotent: %s", record.call_id, record.server, record.tool,
                            exc)  # fmt: skip
        self._metrics.counter(
            "packetflow_mcp_client_recovered_total",
            "MCP calls found interrupted (re-issued if idempotent, else unknown-outcome)",
            server=record.server, tool=record.tool,
        ).inc()  # fmt: skip
        if idempotent and connection is not None:
            log.info("MCP call %s was interrupted: %s is idempotent, calling it again",
                     record.call_id, record.tool)  # fmt: skip
            await self._run(call, idempotent=True)
            return
        log.warning("MCP call %s was interrupted: unknown outcome", record.call_id)
        call.result, call.state = result(record, "unknown-outcome", UNKNOWN), "finished"

    # -- timers, inspection ----------------------------------------------------------------

    async def on_timer(self, timer: Timer) -> None:
        if timer.name != FORGET:
            return
        entry = self.store.peek(timer.partition, timer.key)
        if entry is not None and entry.get("state") == DONE:
            self.store.delete(timer.partition, timer.key)

    def state(self, key: bytes | None) -> Any:
        return self.store.find(key)

    def _now(self) -> int:
        return int(self.services.clock.time() * 1000)

    def calls(self) -> dict[str, str]:
        """The calls this worker holds in memory, by id: queued, running, finished, emitted."""
        return {call_id: call.state for call_id, call in self._calls.items()}
