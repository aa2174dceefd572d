"""The saga agent on the engine's contract: each instance a plain state machine (its stage,
each branch's position, the steps in flight, the results so far) in a changelog-backed store
keyed by the instance's id, with a clock timer per step in flight.

Everything an instance does happens in a turn of its partition: the start intent, a reply
(keyed by the instance's id: the saga is the requester), an ``McpResult``, an intent waited
for, or a timer. A turn reads the instance, moves it on as far as it can go (sending the
next steps' requests, or the compensations), writes it back and emits a
:class:`SagaTransition` per change and a :class:`SagaOutcome` at the end: all in the
worker's batch, so exactly-once topologies commit a transition with its effects and the
offsets in one transaction, and at-least-once ones send a step again after a crash with the
same intent id (derived from the saga, the instance, the start intent's id and the step).

An intent that is not an answer to one of the saga's requests (a start intent, an intent a
``wait_for`` waits for) must be keyed by its key field: the capability checked names that
field's value, the instance moved is the record key's. One keyed otherwise is set aside on
the dead-letter topic (``key-mismatch``) and touches no instance.

Authority: the start intent's, kept as :class:`~packetflow.engine.agent.KeptAuthority`
(principal, grants, token id, chain and validity; never the token). Each step goes out with
those grants, sealed by the worker, after ``lapsed`` says they still hold (else it is set
aside on the denied topic and fails); the receiving worker checks them again
(``authorize_vouched``: expiry and revocations). Compensations go the same way, but one
whose intent requires nothing (an internal intent: the saga's own undo) is sent whatever
became of the token, so a revoked token's saga can still be undone.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

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
    KeptAuthority,
    Origin,
    StoreDecl,
    Timer,
    TopicDecl,
)
from packetflow.engine.codec import ERROR_HEADER, REASON_HEADER, TYPE_HEADER
from packetflow.engine.mcpcall import McpCall, McpResult, mcp_call
from packetflow.engine.topology import Topology
from packetflow.engine.transport import BrokerError, Record
from packetflow.orchestration.intents import FINAL, Ending, Event, SagaOutcome, SagaTransition
from packetflow.orchestration.steps import (
    CallTool,
    Instance,
    Plan,
    Send,
    Sleep,
    Step,
    WaitFor,
)

log = logging.getLogger("packetflow.orchestration")

INSTANCES = StoreDecl(
    "", StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="saga")
)
HISTORY = 100  # transitions an instance keeps in its state (all are on the transitions topic)
FORGET = "forget"  # the timer that drops a finished instance after ``keep``
STEP_ERROR = "step-error"  # a step's function raised, or its effect could not be made
TIMEOUT = "timeout"
UNEXPECTED = "unexpected-reply"
# a step that failed so (no answer in time, an MCP call that may have run) may have done
# what it asked: it is compensated with the completed ones
UNKNOWN = frozenset({TIMEOUT, "mcp-timeout", "mcp-unknown-outcome"})
NOT_WAITING = "saga-not-waiting"  # an intent for an instance that waits for none (pf-reason)
KEY_MISMATCH = "key-mismatch"  # a start or waited-for intent keyed by another than its key field
INBOX = 16  # intents an instance keeps for waits still to come
_IDS = uuid.UUID("3c6f1b2a-7d4e-4f0a-9b8c-2e5d7a1f0c93")  # namespace of step request ids


def request_id(saga: str, instance: str, start_id: str, slot: str) -> str:
    """The intent id of a step's request (``slot``: ``step:<name>`` or ``undo:<name>``) in
    instance ``instance`` of saga ``saga``, started by intent ``start_id``: the same every
    time it is sent, and another in every other instance (even one whose start intent's id,
    the client's choice, is the same)."""
    return uuid.uuid5(_IDS, orjson.dumps([saga, instance, start_id, slot]).decode()).hex


@dataclass(frozen=True, kw_only=True)
class SagaSpec(AgentSpec):
    """A declared saga (see :func:`packetflow.orchestration.saga`)."""

    kind: ClassVar[str] = "saga"
    timers: ClassVar[bool] = True
    # an instance's timers follow from its steps in flight: set again from the store when
    # assigned, they cannot disagree with it after a crash
    durable_timers: ClassVar[bool] = False
    takes_replies: bool = True  # its steps are requests: their replies come back here
    any_answer: bool = True  # of whatever type the reactor answers with
    topology: Topology = field(repr=False, compare=False)
    start: type[Intent]
    plan: Plan = field(repr=False, compare=False)
    outcome_topic: str
    transitions_topic: str
    keep: float = 86400.0  # s a finished instance stays in the store

    def topics(self) -> list[TopicDecl]:
        return [TopicDecl(self.transitions_topic), TopicDecl(self.outcome_topic)]

    def describe(self) -> dict[str, Any]:
        stages = [
            [[_describe(s) for s in branch] for branch in stage] for stage in self.plan.stages
        ]
        return {
            "start": self.start.intent_type,
            "steps": stages,
            "outcomes": self.outcome_topic,
            "transitions": self.transitions_topic,
        }

    def runtime(self, services: AgentServices) -> SagaRuntime:
        return SagaRuntime(self, services)


def _describe(step: Step) -> str:
    undo = " (compensated)" if step.compensate is not None else ""
    return f"{type(step).__name__.lower()} {step.name}{undo}"


@dataclass
class _Turn:
    """One instance being moved on: its partition, key, stored value and what to emit."""

    p: int
    key: bytes
    inst: dict[str, Any]
    out: list[Emit] = field(default_factory=list)
    view: Instance | None = None


class SagaRuntime(AgentRuntime):
    """One worker's saga instances: those of the partitions it owns."""

    def __init__(self, spec: SagaSpec, services: AgentServices) -> None:
        self.spec = spec
        self.topology = spec.topology
        self.plan = spec.plan
        self.services = services
        self.store = services.store
        self.own_topic = services.source_topic  # physical: what its requests name as reply_to
        self.denied = services.names.physical(services.names.denied)
        self._types: dict[str, type[Intent]] = {
            **self.topology.known_types,
            McpResult.intent_type: McpResult,
            Refused.intent_type: Refused,
        }
        self._waits = {t.intent_type for t in self.plan.wait_types()}
        self._running: dict[int, set[bytes]] = {}
        metrics, labels = services.metrics, {"saga": spec.name}
        self._started = metrics.counter(
            "packetflow_saga_started_total", "saga instances started", "saga_started", **labels
        )
        self._ended = {
            status: metrics.counter(
                f"packetflow_saga_{status}_total",
                f"saga instances {status}",
                f"saga_{status}",
                **labels,
            )
            for status in FINAL
        }
        self._dropped = metrics.counter(
            "packetflow_saga_answers_dropped_total",
            "answers no step of the instance was waiting for (late, or a duplicate)",
            "saga_answers_dropped", **labels,
        )  # fmt: skip
        self._gauge = metrics.gauge(
            "packetflow_sagas_running", "saga instances running or compensating here",
            "sagas_running", **labels,
        )  # fmt: skip

    async def start(self) -> None:
        if self.services.seal is None:  # steps go out sealed with the kept grants
            raise RuntimeError(
                f"saga {self.spec.name} needs a worker secret to seal its steps "
                "(packetflow caps secret, in the keys directory)"
            )
        if self.plan.calls_tools() and McpCall not in self.topology.effect_handlers:
            raise RuntimeError(
                f"saga {self.spec.name} calls MCP tools but {self.topology.name} declares no "
                "MCP servers (packetflow.mcp.client.mcp_servers)"
            )

    # -- ownership ---------------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        """Set each instance's timers again from the restored store."""
        timers = self.services.timers
        for p in partitions:
            running = self._running.setdefault(p, set())
            for key, inst in self.store.items(p):
                if inst.get("status") in FINAL:
                    timers.set(p, key, FORGET, inst["ended"] + int(self.spec.keep * 1000),
                               clock=True)  # fmt: skip
                    continue
                running.add(key)
                for slot, entry in inst.get("pending", {}).items():
                    if entry.get("due") is not None:
                        timers.set(p, key, slot, entry["due"], clock=True)
        self._count()

    async def revoked(self, partitions: set[int]) -> None:
        for p in partitions:
            self._running.pop(p, None)
        self._count()

    def _count(self) -> None:
        self._gauge.set(sum(len(keys) for keys in self._running.values()))

    # -- records -----------------------------------------------------------------------

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        p, key = record.partition, record.key or b""
        instance_id = key.decode(errors="replace")
        answer = context.reply_to == self.own_topic and context.requester == instance_id
        if isinstance(intent, self.spec.start) and not answer:
            if not await self._misdirected(record, intent, instance_id):
                await self._begin(record, intent, context)
            return
        inst = self.store.peek(p, key)
        if isinstance(intent, McpResult):
            slot = self._pending(inst, context.intent_id, intent.call_id)
        elif answer:  # a worker sealed it (the processor refuses this reply_to unsealed)
            slot = self._pending(inst, context.causation_id, context.correlation_id)
        elif type(intent).intent_type in self._waits:
            if not await self._misdirected(record, intent, instance_id):
                await self._signal(record, intent, inst)
            return
        else:
            slot = None
        if inst is None or slot is None:
            self._dropped.inc()
            log.info("saga %s/%s: dropped a %s no step waits for (late, or again)",
                     self.spec.name, instance_id, type(intent).intent_type)  # fmt: skip
            return
        turn = _Turn(p, key, inst)
        await self._answered(turn, slot, intent)
        await self._advance(turn)
        await self._save(turn)

    async def _misdirected(self, record: Record, intent: Intent, instance_id: str) -> bool:
        """Whether ``intent`` (a start, or one a wait may be for) is keyed by another than its
        key field: it is then set aside (``key-mismatch``), touching no instance (its
        capability was checked for the instance its key field names, not the record key's)."""
        named = intent.partition_key()
        if record.key is not None and named == instance_id:
            return False
        keyed = None if record.key is None else instance_id
        why = f"saga {self.spec.name}: a {type(intent).intent_type} for {named!r} keyed {keyed!r}"
        await self.services.dead_letter(record, KEY_MISMATCH, why)
        return True

    def _pending(self, inst: dict[str, Any] | None, *ids: str | None) -> str | None:
        """The slot of the step in flight whose request (or call) has one of ``ids``."""
        if inst is None:
            return None
        for slot, entry in inst.get("pending", {}).items():
            if entry.get("id") in ids or (entry.get("call") is not None and entry["call"] in ids):
                return slot
        return None

    async def _begin(self, record: Record, start: Intent, context: Context) -> None:
        p, key = record.partition, record.key or b""
        if self.store.peek(p, key) is not None:
            log.info("saga %s/%s: started already (a duplicate start is ignored)",
                     self.spec.name, key.decode(errors="replace"))  # fmt: skip
            return
        authority = self.services.authority
        kept = authority.keep(context) if authority is not None else KeptAuthority(None, ())
        now = self._now()
        inst: dict[str, Any] = {
            "saga": self.spec.name,
            "id": key.decode(errors="replace"),
            "status": "running",
            "start": {
                "type": type(start).intent_type,
                "data": start.model_dump(mode="json"),
                "intent_id": context.intent_id,
                "trace_id": context.trace_id,
                "span_id": context.span_id,
            },
            "by": context.principal,
            "authority": kept.as_json(),
            "started": now,
            "updated": now,
            "stage": 0,
            "cursor": [0] * len(self.plan.stages[0]),
            "pending": {},
            "results": {},
            "done": [],
            "failure": None,
            "undo": [],
            "uncertain": [],
            "compensated": [],
            "undo_failed": [],
            "inbox": [],
            "history": [],
        }
        self._started.inc()
        self._running.setdefault(p, set()).add(key)
        self._count()
        turn = _Turn(p, key, inst)
        self._transition(turn, "started")
        await self._advance(turn)
        await self._save(turn)

    async def _signal(self, record: Record, intent: Intent, inst: dict[str, Any] | None) -> None:
        """An intent sent to the instance: it completes the first wait for it that matches,
        or waits in the instance's inbox (at most ``INBOX``) for a wait to come."""
        p, key = record.partition, record.key or b""
        name = type(intent).intent_type
        if inst is not None and inst["status"] == "running" and inst["failure"] is None:
            turn = _Turn(p, key, inst)
            for slot, entry in list(inst["pending"].items()):
                if entry["kind"] == "wait" and self._matches(turn, slot, intent):
                    await self._answered(turn, slot, intent)
                    break
            else:
                if inst["failure"] is None and len(inst["inbox"]) >= INBOX:
                    why = f"saga {self.spec.name}/{inst['id']} holds {INBOX} intents already"
                    await self.services.dead_letter(record, NOT_WAITING, why)
                    return
                if inst["failure"] is None:  # for a wait still to come
                    inst["inbox"].append({"type": name, "data": intent.model_dump(mode="json")})
            await self._advance(turn)
            await self._save(turn)
            return
        why = f"saga {self.spec.name}/{key.decode(errors='replace')} waits for no {name}"
        await self.services.dead_letter(record, NOT_WAITING, why)

    def _matches(self, turn: _Turn, slot: str, intent: Intent) -> bool:
        """Whether ``intent`` is what the wait in ``slot`` waits for (a ``where`` that raises
        fails the step)."""
        step = self._step(slot)
        if not isinstance(step, WaitFor) or not isinstance(intent, step.intent):
            return False
        try:
            return step.where is None or bool(step.where(self._view(turn), intent))
        except Exception as exc:
            self._fail(turn, slot, STEP_ERROR, f"where: {_one_line(exc)}")
            return False

    # -- timers ------------------------------------------------------------------------

    async def on_timer(self, timer: Timer) -> None:
        p, key = timer.partition, timer.key
        inst = self.store.peek(p, key)
        if inst is None:
            return
        if timer.name == FORGET:
            if inst.get("status") in FINAL:
                self.store.delete(p, key)
            return
        entry = inst.get("pending", {}).get(timer.name)
        if entry is None or entry.get("due") != timer.due:
            return  # answered meanwhile: a stale timer
        turn = _Turn(p, key, inst)
        step = self._step(timer.name)
        if isinstance(step, Sleep):
            self._complete(turn, timer.name, None)
        else:
            limit = (entry["due"] - entry["since"]) / 1000
            self._fail(turn, timer.name, TIMEOUT, f"no answer within {limit:g}s")
        await self._advance(turn)
        await self._save(turn)

    # -- the state machine -------------------------------------------------------------

    async def _answered(self, turn: _Turn, slot: str, answer: Intent) -> None:
        """What came back for the step in ``slot``: it completes or fails the step."""
        step = self._step(slot)
        if isinstance(answer, Refused):
            self._fail(turn, slot, answer.reason, answer.error)
        elif isinstance(answer, McpResult):
            if answer.ok:
                self._complete(turn, slot, answer)
            else:
                self._fail(
                    turn,
                    slot,
                    f"mcp-{answer.outcome}",
                    answer.error or f"{answer.server}/{answer.tool}: {answer.outcome}",
                )
        elif isinstance(step, Send) and step.expect and not isinstance(answer, step.expect):
            wanted = " or ".join(t.intent_type for t in step.expect)
            self._fail(turn, slot, UNEXPECTED,
                       f"a {type(answer).intent_type} answered, not {wanted}")  # fmt: skip
        else:
            self._complete(turn, slot, answer)

    def _step(self, slot: str) -> Step:
        """The step a slot (``step:<name>``, ``undo:<name>``) runs: for an undo, the
        compensation step."""
        kind, _, name = slot.partition(":")
        step = self.plan.by_name[name]
        if kind == "undo":
            assert isinstance(step.compensate, Step)
            return step.compensate
        return step

    def _complete(self, turn: _Turn, slot: str, result: Intent | None) -> None:
        inst = turn.inst
        entry = inst["pending"].pop(slot)
        self.services.timers.cancel(turn.p, turn.key, slot)
        name = entry["step"]
        if slot.startswith("undo:"):
            inst["compensated"].append(name)
            self._transition(turn, "compensation-completed", name)
            return
        inst["results"][name] = None if result is None else {
            "type": type(result).intent_type, "data": result.model_dump(mode="json"),
        }  # fmt: skip
        turn.view = None
        if self.plan.by_name[name].compensate is not None:
            inst["done"].append(name)
        inst["cursor"][entry["branch"]] += 1
        self._transition(turn, "step-completed", name)

    def _fail(self, turn: _Turn, slot: str, reason: str, error: str) -> None:
        inst = turn.inst
        entry = inst["pending"].pop(slot, None) or {"step": slot.partition(":")[2]}
        self.services.timers.cancel(turn.p, turn.key, slot)
        name = entry["step"]
        log.info("saga %s/%s: %s %s failed (%s): %s", self.spec.name, inst["id"],
                 slot.partition(":")[0], name, reason, error)  # fmt: skip
        if slot.startswith("undo:"):
            inst["undo_failed"].append({"step": name, "reason": reason, "error": error[:1000]})
            self._transition(turn, "compensation-failed", name, reason, error)
            return
        self._transition(turn, "step-failed", name, reason, error)
        if reason in UNKNOWN:  # it may have happened: undone too (undo is idempotent)
            inst["uncertain"] = [*inst.get("uncertain", []), name]  # no result: see Instance
            turn.view = None
            if self.plan.by_name[name].compensate is not None:
                inst["done"].append(name)
        if inst["failure"] is None:
            inst["failure"] = {"step": name, "reason": reason, "error": error[:1000]}
            # what only waits (a sleep, a wait) changed nothing: it stops now; requests in
            # flight are awaited, so that what they did is compensated too
            for other, waiting in list(inst["pending"].items()):
                if waiting["kind"] in ("sleep", "wait"):
                    del inst["pending"][other]
                    self.services.timers.cancel(turn.p, turn.key, other)

    async def _advance(self, turn: _Turn) -> None:
        """Move the instance on as far as it goes without waiting."""
        inst = turn.inst
        while True:
            if inst["status"] == "running":
                if inst["failure"] is not None:
                    if inst["pending"]:
                        return  # requests in flight: their answers (or timeouts) first
                    inst["status"] = "compensating"
                    inst["undo"] = list(reversed(inst["done"]))
                    self._transition(
                        turn,
                        "compensating",
                        inst["failure"]["step"],
                        inst["failure"]["reason"],
                        inst["failure"]["error"],
                    )
                    continue
                stage = self.plan.stages[inst["stage"]]
                for b, branch in enumerate(stage):
                    await self._next_in_branch(turn, b, branch)
                    if inst["failure"] is not None:
                        break
                if inst["failure"] is not None:
                    continue
                if inst["pending"]:
                    return
                inst["stage"] += 1
                if inst["stage"] == len(self.plan.stages):
                    await self._finish(turn, "completed")
                    return
                inst["cursor"] = [0] * len(self.plan.stages[inst["stage"]])
                continue
            if inst["status"] == "compensating":
                if inst["pending"]:
                    return
                if not inst["undo"]:
                    await self._finish(turn, "failed" if inst["undo_failed"] else "compensated")
                    return
                await self._compensate(turn, inst["undo"].pop(0))
                continue
            return  # ended

    async def _next_in_branch(self, turn: _Turn, b: int, branch: tuple[Step, ...]) -> None:
        """Start branch ``b``'s next step unless one of it is in flight (skipping those whose
        condition does not hold)."""
        inst = turn.inst
        if any(e.get("branch") == b for e in inst["pending"].values()):
            return
        while inst["cursor"][b] < len(branch):
            step = branch[inst["cursor"][b]]
            if step.when is not None:
                try:
                    runs = bool(step.when(self._view(turn)))
                except Exception as exc:
                    self._fail(turn, f"step:{step.name}", STEP_ERROR, f"when: {_one_line(exc)}")
                    return
                if not runs:
                    inst["cursor"][b] += 1
                    inst["results"][step.name] = None
                    self._transition(turn, "step-skipped", step.name)
                    continue
            slot = f"step:{step.name}"
            await self._launch(turn, slot, step, b)
            if slot in inst["pending"] or inst["failure"] is not None:
                return  # in flight (or failed); else done at once: the branch goes on

    async def _compensate(self, turn: _Turn, name: str) -> None:
        """Undo completed step ``name``: send its compensation intent (done once sent) or
        start its compensation step (done when it is answered)."""
        undo = self.plan.by_name[name].compensate
        slot = f"undo:{name}"
        if isinstance(undo, Step):
            await self._launch(turn, slot, undo, -1, of=name)
            return
        assert undo is not None
        self._transition(turn, "compensation-started", name)
        try:
            intent = undo(self._view(turn))
            sent = await self._send(turn, slot, intent, None, request=False, undo=True)
        except BrokerError:
            raise
        except Exception as exc:
            self._fail(turn, slot, STEP_ERROR, _one_line(exc))
            return
        if sent is None:
            turn.inst["compensated"].append(name)
            self._transition(turn, "compensation-completed", name)
        else:
            self._fail(turn, slot, *sent)

    async def _launch(self, turn: _Turn, slot: str, step: Step, b: int, of: str = "") -> None:
        """Start ``step`` in ``slot``: its request, its call or its timer."""
        inst, now = turn.inst, self._now()
        name = of or step.name
        undo = slot.startswith("undo:")
        entry: dict[str, Any] = {"step": name, "branch": b, "since": now,
                                 "due": step.deadline(now)}  # fmt: skip
        self._transition(turn, "compensation-started" if undo else "step-started", name)
        refused: tuple[str, str] | None = None
        try:
            if isinstance(step, Send):
                entry["kind"] = "send"
                intent = step.build(self._view(turn))
                entry["id"] = self._request_id(inst, slot)
                refused = await self._send(turn, slot, intent, step.topic, request=True,
                                           undo=undo, deadline=entry["due"])  # fmt: skip
            elif isinstance(step, CallTool):
                entry["kind"] = "call"
                effect = mcp_call(step.server, step.tool, step.arguments(self._view(turn)),
                                  timeout=step.timeout)  # fmt: skip
                entry["id"] = self._request_id(inst, slot)
                refused = self._lapsed(inst)
                if refused is None:
                    context = self._context(turn, slot, request=False)
                    origin = Origin(self.spec.name, context, turn.key)
                    entry["call"] = await self.services.effects.run(effect, origin)
            elif isinstance(step, Sleep):
                entry["kind"] = "sleep"
                if entry["due"] is None:
                    raise ValueError(f"cron {step.cron!r} has no next instant")
            elif isinstance(step, WaitFor):
                entry["kind"] = "wait"
                inst["pending"][slot] = entry
                for i, item in enumerate(inst["inbox"]):  # sent before the wait began
                    early = self._decode(item)
                    if isinstance(early, Intent) and self._matches(turn, slot, early):
                        del inst["inbox"][i]
                        await self._answered(turn, slot, early)
                        return
                    if slot not in inst["pending"]:
                        return  # its where raised: failed
        except BrokerError:
            raise
        except Exception as exc:  # its function raised, or its effect cannot be made
            self._fail(turn, slot, STEP_ERROR, _one_line(exc))
            return
        inst["pending"][slot] = entry
        if refused is not None:
            self._fail(turn, slot, *refused)
            return
        if entry["due"] is not None:
            self.services.timers.set(turn.p, turn.key, slot, entry["due"], clock=True)

    async def _send(
        self,
        turn: _Turn,
        slot: str,
        intent: Intent,
        topic: str | None,
        *,
        request: bool,
        undo: bool,
        deadline: int | None = None,
    ) -> tuple[str, str] | None:
        """Send ``intent`` with the kept authority (a request: answered here); the reason
        and message when that authority lapsed (the intent then goes to the denied topic)."""
        if not isinstance(intent, Intent):
            raise TypeError(f"a step's function returned {type(intent).__name__}, not an intent")
        # the saga's own undo (an intent that requires nothing) goes whatever the token did
        lapsed = None if undo and not intent.requirements() else self._lapsed(turn.inst)
        if lapsed is not None:
            reason, message = lapsed
            made = Record(self.services.source_topic, turn.p, -1, turn.key,
                          intent.model_dump_json().encode(),
                          [(TYPE_HEADER, type(intent).intent_type.encode())],
                          self._now())  # fmt: skip
            await self.services.set_aside(self.denied, made, [
                (REASON_HEADER, reason),
                (ERROR_HEADER, f"saga {self.spec.name}/{turn.inst['id']}: {message}"),
            ])  # fmt: skip
            return lapsed
        context = self._context(turn, slot, request=request)
        if deadline is not None:  # taken later than its step waits, a request is set aside
            # (its Refused, a late answer, is dropped), never run after its compensation
            context = context.model_copy(
                update={"deadline": datetime.fromtimestamp(deadline / 1000, UTC)}
            )
        emit = Emit(intent, topic, None, context)
        await self.services.effects.run_effects([emit], Origin(self.spec.name, context, turn.key))
        return None

    def _lapsed(self, inst: dict[str, Any]) -> tuple[str, str] | None:
        authority = self.services.authority
        if authority is None:
            return None
        return authority.lapsed(KeptAuthority.from_json(inst["authority"]))

    def _request_id(self, inst: dict[str, Any], slot: str) -> str:
        return request_id(self.spec.name, inst["id"], inst["start"]["intent_id"], slot)

    def _context(self, turn: _Turn, slot: str, *, request: bool) -> Context:
        """The context a step goes out in: the kept principal and grants (sealed: the token's
        id, chain and validity in baggage), the start intent's trace, an id derived from the
        instance and the slot, and (a request) the saga as ``reply_to`` and requester.

        A request's deadline is its step's (``_send``): answers never carry it (the engine
        drops a request's deadline from its reply and its ``Refused``)."""
        inst = turn.inst
        kept = KeptAuthority.from_json(inst["authority"])
        rid = self._request_id(inst, slot)
        base = Context.new(
            principal=kept.principal,
            capabilities=[Capability.parse(g) for g in kept.grants],
            baggage={"saga": self.spec.name, "saga_id": inst["id"], **kept.baggage()},
        )
        answer = {"reply_to": self.own_topic, "requester": inst["id"]} if request else {}
        return base.model_copy(update={
            "intent_id": rid, "correlation_id": rid, "span_id": rid[:16],
            "trace_id": inst["start"]["trace_id"], "parent_span_id": inst["start"]["span_id"],
            **answer,
        })  # fmt: skip

    async def _finish(self, turn: _Turn, status: Ending) -> None:
        inst = turn.inst
        inst["status"] = status
        inst["ended"] = self._now()
        inst["undo"] = []
        failure = inst["failure"] or {}
        self._transition(turn, status, failure.get("step"), failure.get("reason"),
                         failure.get("error"))  # fmt: skip
        outcome = SagaOutcome(
            saga=self.spec.name,
            saga_id=inst["id"],
            status=status,
            step=failure.get("step"),
            reason=failure.get("reason"),
            error=failure.get("error"),
            compensated=list(inst["compensated"]),
            compensations_failed=[f["step"] for f in inst["undo_failed"]],
            results={k: v for k, v in inst["results"].items() if v is not None},
        )
        turn.out.append(Emit(outcome, self.spec.outcome_topic, inst["id"], self._own(turn)))
        self._ended[status].inc()
        self._running.get(turn.p, set()).discard(turn.key)
        self._count()
        keep = inst["ended"] + int(self.spec.keep * 1000)
        self.services.timers.set(turn.p, turn.key, FORGET, keep, clock=True)

    def _transition(
        self,
        turn: _Turn,
        event: Event,
        step: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        inst, now = turn.inst, self._now()
        inst["updated"] = now
        inst["history"] = [*inst["history"], [now, event, step, reason, detail]][-HISTORY:]
        transition = SagaTransition(
            saga=self.spec.name, saga_id=inst["id"], event=event,
            step=step, reason=reason, detail=detail, at=now,
        )  # fmt: skip
        turn.out.append(Emit(transition, self.spec.transitions_topic, inst["id"], self._own(turn)))

    def _own(self, turn: _Turn) -> Context:
        """The context of what the saga says of itself (transitions, its outcome): the
        instance's principal and trace, no capabilities (they are internal: sealed)."""
        start = turn.inst["start"]
        return Context.new(
            principal=turn.inst["by"], baggage={"saga": self.spec.name}
        ).model_copy(update={"trace_id": start["trace_id"], "parent_span_id": start["span_id"],
                             "correlation_id": start["intent_id"]})  # fmt: skip

    async def _save(self, turn: _Turn) -> None:
        self.store.put(turn.p, turn.key, turn.inst)
        if turn.out:
            origin = Origin(self.spec.name, self._own(turn), turn.key)
            await self.services.effects.run_effects(turn.out, origin)

    def _view(self, turn: _Turn) -> Instance:
        if turn.view is None:
            inst = turn.inst
            turn.view = Instance(
                id=inst["id"],
                start=self.spec.start.model_validate(inst["start"]["data"]),
                principal=inst["by"],
                results={k: self._decode(v) for k, v in inst["results"].items()},
                started=datetime.fromtimestamp(inst["started"] / 1000, UTC),
                uncertain=frozenset(inst.get("uncertain", ())),
            )
        return turn.view

    def _decode(self, stored: dict[str, Any] | None) -> Any:
        if stored is None:
            return None
        cls = self._types.get(stored["type"])
        return stored["data"] if cls is None else cls.model_validate(stored["data"])

    def _now(self) -> int:
        return int(self.services.clock.time() * 1000)

    # -- inspection ----------------------------------------------------------------------

    def state(self, key: bytes | None) -> Any:
        return self.store.find(key)

    def inspect(self, key: bytes | None) -> Any:
        inst = self.store.find(key)
        if inst is None:
            return None
        return {**inst, "timers": dict(_timers(inst))}


def _timers(inst: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for slot, entry in inst.get("pending", {}).items():
        if entry.get("due") is not None:
            yield slot, datetime.fromtimestamp(entry["due"] / 1000, UTC).isoformat()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
