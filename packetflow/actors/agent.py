"""Actors as an agent on the engine's contract: one turn per message, supervision, a stash.

An actor of a type is addressed by its id, the record key of its messages on the type's
topic, so it lives on whichever worker owns that key's partition and takes its messages one
at a time, in order (the partition is its mailbox). Its state is the main store's value
for its id; the handler gets ``(message, ctx, state)`` and returns ``(new_state, effects)``
like a stateful reactor (``None`` as the new state ends the actor: its state is deleted).

A failed turn leaves the state as it was. Under ``restart`` the message goes first into the
actor's stash (the ``supervision`` store, with its restart times) and a durable timer is set
for the end of the backoff; the actor's later messages join the stash meanwhile, so the
partition's offsets keep moving and its other actors keep flowing. When the timer fires the
stash is replayed in order; a message that fails past ``max_restarts`` within the window is
set aside (``actor-gave-up``) and the next one goes on. Everything here is store changes,
timers and sends of the worker's batch: exactly-once topologies commit them together.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from packetflow.actors.asks import Ask, AskTimedOut
from packetflow.actors.operate import ActorControl, ActorView, fold
from packetflow.actors.reminders import Forget, Remind, Reminder, StartTimer, firings
from packetflow.actors.supervision import Supervision
from packetflow.actors.supervisors import Decide, Escalated, Supervise
from packetflow.core.context import Context
from packetflow.core.effects import Effect, Emit
from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.core.replies import Refused
from packetflow.engine.agent import (
    AgentRuntime,
    AgentServices,
    AgentSpec,
    KeyedStore,
    Origin,
    StoreDecl,
    Timer,
    TopicDecl,
)
from packetflow.engine.transport import BrokerError, Record
from packetflow.engine.transport.partitioner import group_of

log = logging.getLogger("packetflow.actors")

# per actor id: {"restarts": [ms, ...], "stash": [entry, ...] | absent, "stopped": reason}
SUPERVISION = StoreDecl(
    "supervision",
    StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="supervision"),
)
# per actor id: {ask id: {"request": type, "timeout": s, "context": JSON of the asking
# message's context}}
ASKS = StoreDecl(
    "asks", StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="asks")
)
# per actor id: {name: {"due": ms, "every": ms | None, "misfire": ..., "context": JSON}}
REMINDERS = StoreDecl(
    "reminders",
    StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="reminders"),
)
REMINDER_TIMER = "reminder:"  # + its name
RESTART_TIMER = "restart"
EXPIRED_KEPT = 100  # per actor: asks that timed out whose late answers are still recognised
ASK_TIMER = "ask:"  # + the ask's id

# reasons a message is set aside with (pf-reason)
FAILED = "actor-failed"  # resume / stop: the handler raised
GAVE_UP = "actor-gave-up"  # restart: past max_restarts within the window
STOPPED = "actor-stopped"  # the actor was stopped by an earlier failure
STASH_FULL = "actor-stash-full"  # backing off, and its stash is full
RECORD_TYPE = b"packetflow.actors.SupervisionRecord"  # pf-type of <topology>.supervision
# a backing-off actor's stash: at most this many messages and (as JSON) bytes, well under
# the changelog's record limit (the stash is one value of the supervision store)
STASH_LIMIT = 1_000
STASH_BYTES = 512 * 1024


@dataclass(frozen=True, kw_only=True)
class ActorSpec(AgentSpec):
    """A declared actor type (see :func:`packetflow.actors.actor`)."""

    kind: ClassVar[str] = "actor"
    keyed_by_field: ClassVar[bool] = False  # keyed by actor id (a router picks it)
    timers: ClassVar[bool] = True  # restart backoffs and ask timeouts: durable timers
    fn: Callable[..., Any]
    supervision: Supervision = field(default_factory=Supervision)
    takes_replies: bool = True  # answers to its asks come to its topic
    records_topic: str = ""  # logical: <topology>.supervision, every decision as a record
    supervisor: str | None = None  # the supervisor actor type's name
    supervisor_topic: str | None = None  # ... and its (logical) topic
    passivate_after: float | None = None  # seconds idle before an actor leaves memory
    max_active: int | None = None  # actors in memory per worker, the least recent leave

    def topics(self) -> list[TopicDecl]:
        return [TopicDecl(self.records_topic, internal=True)]

    def describe(self) -> dict[str, Any]:
        s = self.supervision
        policy: str = s.strategy
        if s.strategy == "restart":
            policy += f" (max {s.max_restarts} in {s.within:g}s, backoff {s.backoff[0]:g}-"
            policy += f"{s.backoff[1]:g}s)"
        out: dict[str, Any] = {"supervision": policy}
        if self.supervisor:
            out["supervisor"] = self.supervisor
        if self.key_group:
            out["group"] = f"actor id up to {self.key_group!r}"
        if self.passivate_after is not None:
            out["passivate_after_s"] = self.passivate_after
        if self.max_active is not None:
            out["max_active"] = self.max_active
        return out

    def group(self, key: bytes) -> str:
        """The supervisor's id for an actor: its group, or (ungrouped) the type's name."""
        return _id(group_of(key, self.key_group.encode())) if self.key_group else self.name

    def runtime(self, services: AgentServices) -> ActorRuntime:
        return ActorRuntime(self, services)


class ActorRuntime(AgentRuntime):
    """One worker's actors of one type."""

    ticks: ClassVar[bool] = True  # idle actors are passivated between batches

    def __init__(self, spec: ActorSpec, services: AgentServices) -> None:
        self.spec = spec
        self.services = services
        self.store: KeyedStore = services.store
        self.supervised: KeyedStore = services.stores["supervision"]
        self.asks: KeyedStore = services.stores["asks"]
        self.reminders: KeyedStore = services.stores["reminders"]
        self.own_topic = services.source_topic  # physical: what its asks name as reply_to
        self.records_topic = services.names.physical(spec.records_topic)
        self.is_async = inspect.iscoroutinefunction(spec.fn)
        self.with_id = takes_id(spec.fn)
        self.types = {t.intent_type: t for t in spec.intent_types}
        initial = spec.state.initial() if spec.state is not None else None
        self._state_type = None if initial is None else type(initial)  # what turns return
        labels = {"actor": spec.name}
        metrics = services.metrics
        self._decisions = {
            decision: metrics.counter(
                "packetflow_actor_supervision_total",
                "supervision decisions on failed actor messages",
                f"supervision_{decision}",
                decision=decision,
                **labels,
            )
            for decision in ("restart", "resume", "stop", "gave-up", "escalate")
        }
        # passivation: the actors in memory, least recently active first (key -> partition,
        # last turn ms); kept only when the type passivates
        self._tracking = spec.passivate_after is not None or spec.max_active is not None
        self._active: dict[bytes, tuple[int, int]] = {}
        # in-memory timers (timer(...)): (key, name) -> (partition, due ms, every ms or
        # None, the context of the message that set it)
        self._timers: dict[tuple[bytes, str], tuple[int, int, int | None, Context]] = {}
        self._active_now = metrics.gauge(
            "packetflow_actors_active", "actors in memory (a type that passivates)",
            "actors_active", **labels,
        )  # fmt: skip
        self._activations = metrics.counter(
            "packetflow_actor_activations_total",
            "actors brought into memory by a message (a type that passivates)",
            "activations", **labels,
        )  # fmt: skip
        self._passivations = metrics.counter(
            "packetflow_actor_passivations_total",
            "actors that left memory (idle, or past the type's max_active)",
            "passivations", **labels,
        )  # fmt: skip
        self._unanswered = metrics.counter(
            "packetflow_actor_replies_dropped_total",
            "answers no ask of the actor was waiting for (late, after its timeout)",
            "replies_dropped",
            **labels,
        )

    # -- messages ----------------------------------------------------------------------

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        p, key = record.partition, record.key or b""
        if isinstance(intent, ActorControl):
            await self._control(p, key, intent, context)
            return
        if isinstance(intent, Supervise):  # internal: only a worker sends it
            await self._directed(p, key, intent)
            return
        if (
            context.reply_to == self.own_topic
            and context.requester == _id(key)
            and context.causation_id is not None
        ):  # perhaps an answer to one of its asks (else a message caused by one of them);
            # a worker sealed it: the processor refuses a record naming this topic unsealed
            pending = self.asks.peek(p, key) or {}
            entry = pending.pop(context.causation_id, None)
            if entry is not None:
                _keep(self.asks, p, key, pending)
                if entry.get("expired"):
                    self._unanswered.inc()
                    log.info(
                        "actor %s/%s: dropped a %s that came after its ask timed out",
                        self.spec.name, _id(key), type(intent).intent_type,
                    )
                    return
                self.services.timers.cancel(p, key, ASK_TIMER + context.causation_id)
                # handled in the context of the message that asked
                await self._deliver(
                    p, key, record, intent, Context.model_validate_json(entry["context"])
                )
                return
        if isinstance(intent, Refused):  # the engine's answer to an ask no longer waiting
            self._unanswered.inc()
            return
        await self._deliver(p, key, record, intent, context)

    async def _control(self, p: int, key: bytes, command: ActorControl, context: Context) -> None:
        """An operator's command (its capability already checked)."""
        if command.actor_type != self.spec.name or command.actor != _id(key):
            log.warning(  # its capability was checked for the actor it names, not this one
                "actor %s/%s: ignored a command for actor %s/%s",
                self.spec.name, _id(key), command.actor_type, command.actor,
            )
            return
        status = self.supervised.peek(p, key) or {}
        if status.pop("stopped", None) is not None:
            log.warning("actor %s/%s started again by %s", self.spec.name, _id(key),
                        context.principal)  # fmt: skip
            _keep(self.supervised, p, key, status)
            await self._record(key, "start", f"operator {context.principal}")

    async def _deliver(
        self,
        p: int,
        key: bytes,
        record: Record,
        intent: Intent,
        context: Context,
        *,
        touch: bool = True,
    ) -> None:
        """One message for the actor: its turn now, or into its stash while it backs off."""
        status = self.supervised.peek(p, key)
        if status:
            if status.get("stopped"):
                await self.services.dead_letter(
                    record, STOPPED, f"actor {self.spec.name}/{_id(key)} is stopped"
                )
                return
            if "stash" in status:  # backing off: the message waits its turn
                entry = _entry(record, intent, context)
                size = status.get("bytes", 0) + len(orjson.dumps(entry))
                if len(status["stash"]) >= STASH_LIMIT or size > STASH_BYTES:
                    await self.services.dead_letter(
                        record,
                        STASH_FULL,
                        f"actor {self.spec.name}/{_id(key)} is backing off and already holds "
                        f"{len(status['stash'])} messages",
                    )
                    return
                status["stash"].append(entry)
                status["bytes"] = size
                self.supervised.put(p, key, status)
                return
        await self._turn(p, key, record, intent, context, touch=touch)

    async def _turn(
        self,
        p: int,
        key: bytes,
        record: Record,
        intent: Intent,
        context: Context,
        *,
        touch: bool = True,
    ) -> bool:
        """Run one message; False when it failed (and supervision took over). ``touch``:
        it counts as activity (an in-memory timer's firing does not)."""
        if self._tracking and touch:
            self._touch(p, key)
        try:
            state = self.store.get(p, key)
            result = (
                self.spec.fn(intent, context, state, _id(key))
                if self.with_id
                else self.spec.fn(intent, context, state)
            )
            if self.is_async:
                result = await result
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(
                    f"actor {self.spec.name} must return (new_state, effects), "
                    f"got {type(result).__name__}"
                )
            new_state, effects = result
            self._check_state(new_state)
            # the new state as its changelog record before anything is sent (as a reactor's)
            encoded = None if new_state is None else self.store.encode(new_state, key)
            asked: list[tuple[Ask, Context]] = []
            reminded: list[Remind | Forget | StartTimer] = []
            if effects is not None and not (type(effects) is list and not effects):
                effects, asked, reminded = self._requests(effects, key, context)
                await self.services.effects.run_effects(
                    effects, Origin(self.spec.name, context, record.key)
                )
        except BrokerError:
            raise  # the broker's failure, not the message's: the worker retries the batch
        except Exception as exc:  # the message's failure: the policy decides
            await self._failed(p, key, record, intent, context, exc)
            return False
        if asked:
            self._waiting(p, key, context, asked)
        if reminded:
            self._remind(p, key, context, reminded)
        if encoded is None:
            self._end(p, key)
        else:
            self.store.put_encoded(p, key, new_state, encoded)
        return True

    # -- passivation -------------------------------------------------------------------

    def _touch(self, p: int, key: bytes) -> None:
        """The actor takes a turn: it is (or becomes) the most recently active; past
        ``max_active`` the least recently active leaves memory."""
        if self._active.pop(key, None) is None:
            self._activations.inc()
        self._active[key] = (p, now_ms(self.services.clock))
        limit = self.spec.max_active
        if limit is not None:
            while len(self._active) > limit:
                self._passivate(next(iter(self._active)))
        self._active_now.set(len(self._active))

    def _passivate(self, key: bytes) -> None:
        """The actor leaves memory: its values may go from the stores' caches (they stay
        in the stores and changelogs; the next message reads them back)."""
        p, _ = self._active.pop(key)
        for store in (self.store, self.supervised, self.asks, self.reminders):
            store.release(p, key)
        self._drop_timers(lambda k, _: k == key)  # they die with the activation
        self._passivations.inc()

    def _drop_timers(self, doomed: Callable[[bytes, int], bool]) -> None:
        for timer in [t for t, (p, *_) in self._timers.items() if doomed(t[0], p)]:
            del self._timers[timer]

    def next_due(self) -> int | None:
        return min(due for _, due, _, _ in self._timers.values()) if self._timers else None

    async def tick(self) -> None:
        if self._timers:
            await self._fire_timers()
        after = self.spec.passivate_after
        if after is None or not self._active:
            return
        cutoff = now_ms(self.services.clock) - int(after * 1000)
        idle = [k for k, (_, last) in self._active.items() if last <= cutoff]  # oldest first
        for key in idle:
            self._passivate(key)
        if idle:
            self._active_now.set(len(self._active))

    async def _fire_timers(self) -> None:
        """The in-memory timers due, in due order (periodic ones set for their next time;
        firings missed meanwhile are counted, not sent)."""
        now = now_ms(self.services.clock)
        due = sorted((d, key, name) for (key, name), (_, d, _, _) in self._timers.items()
                     if d <= now)  # fmt: skip
        for at, key, name in due:
            entry = self._timers.get((key, name))
            if entry is None or entry[1] != at:
                continue  # forgotten or set again by an earlier firing
            p, _, every, context = entry
            missed = 0
            if every is None:
                del self._timers[(key, name)]
            else:
                missed = (now - at) // every
                at += missed * every
                self._timers[(key, name)] = (p, at + every, every, context)
            fired = Reminder(actor=_id(key), name=name, scheduled=at, missed=missed,
                             durable=False)  # fmt: skip
            await self._deliver(p, key, self._made(p, key, fired, at), fired, context,
                                touch=False)  # fmt: skip

    async def revoked(self, partitions: set[int]) -> None:
        self._drop_timers(lambda _, p: p in partitions)
        gone = [k for k, (p, _) in self._active.items() if p in partitions]
        for key in gone:
            del self._active[key]
        if gone:
            self._active_now.set(len(self._active))

    def _end(self, p: int, key: bytes) -> None:
        """The actor returned None: its state, reminders and pending asks go (an actor
        that ends is not brought back by its own timers)."""
        self.store.delete(p, key)
        self._drop_timers(lambda k, _: k == key)
        timers = self.services.timers
        for name in self.reminders.peek(p, key) or {}:
            timers.cancel(p, key, REMINDER_TIMER + name)
        for ask_id, entry in (self.asks.peek(p, key) or {}).items():
            if not entry.get("expired"):
                timers.cancel(p, key, ASK_TIMER + ask_id)
        self.reminders.delete(p, key)
        self.asks.delete(p, key)

    def _requests(
        self, effects: Any, key: bytes, context: Context
    ) -> tuple[Any, list[tuple[Ask, Context]], list[Remind | Forget | StartTimer]]:
        """The turn's effects with each :class:`Ask` made an emit whose context makes its
        answer come back to this actor, those asks, and its reminder changes (the last two
        recorded once the turn succeeded)."""
        items = effects if isinstance(effects, list | tuple) else [effects]
        for effect in items:
            if not isinstance(effect, _ACTOR_EFFECTS) and _nests_actor_effect(effect):
                raise TypeError(
                    f"actor {self.spec.name}: ask(), remind(), forget() and decide() go in "
                    "the list an actor returns, not inside sequential/parallel/when/retry"
                )
        if not any(isinstance(e, _ACTOR_EFFECTS) for e in items):
            return effects, [], []
        out: list[Any] = []
        asked = []
        reminded: list[Remind | Forget | StartTimer] = []
        for effect in items:
            if isinstance(effect, Ask):
                request = context.inherit(self.spec.name).model_copy(
                    update={"reply_to": self.own_topic, "requester": _id(key)}
                )
                out.append(Emit(effect.intent, effect.topic, None, request))
                asked.append((effect, request))
            elif isinstance(effect, Remind | Forget | StartTimer):
                reminded.append(effect)
            elif isinstance(effect, Decide):  # to the failed actor's topic, sealed (internal)
                escalated = effect.escalated
                directive = Supervise(
                    actor_type=escalated.actor_type,
                    actor=escalated.actor,
                    decision=effect.decision,
                    group_wide=effect.group_wide,
                    supervisor=_id(key),
                    failure=escalated.failure,
                )
                out.append(Emit(directive, escalated.topic, escalated.actor, None))
            else:
                out.append(effect)
        return out, asked, reminded

    def _remind(
        self, p: int, key: bytes, context: Context, changes: list[Remind | Forget | StartTimer]
    ) -> None:
        """Set or cancel the turn's reminders (durable timers, and their settings) and
        in-memory timers."""
        table = self.reminders.peek(p, key) or {}
        changed = False
        now = now_ms(self.services.clock)
        for change in changes:
            timer = REMINDER_TIMER + change.name
            if isinstance(change, StartTimer):
                every = None if change.every is None else int(change.every * 1000)
                later = context.model_copy(update={"deadline": None})
                self._timers[(key, change.name)] = (p, now + int(change.after * 1000), every,
                                                    later)  # fmt: skip
                continue
            changed = True
            if isinstance(change, Forget):
                self._timers.pop((key, change.name), None)
                table.pop(change.name, None)
                self.services.timers.cancel(p, key, timer)
                continue
            due = now + int(change.after * 1000)
            table[change.name] = {
                "due": due,
                "every": None if change.every is None else int(change.every * 1000),
                "misfire": change.misfire,
                # it fires later: the message's deadline would fail what it sends then
                "context": context.model_copy(update={"deadline": None}).model_dump_json(),
            }
            self.services.timers.set(p, key, timer, due, clock=True)
        if changed:
            _keep(self.reminders, p, key, table)

    def _waiting(
        self, p: int, key: bytes, context: Context, asked: list[tuple[Ask, Context]]
    ) -> None:
        """Remember the turn's asks and set their timeouts."""
        pending = self.asks.peek(p, key) or {}
        now = int(self.services.clock.time() * 1000)
        for effect, request in asked:
            pending[request.intent_id] = {
                "request": type(effect.intent).intent_type,
                "timeout": effect.timeout,
                "context": context.model_dump_json(),
            }
            due = now + int(effect.timeout * 1000)
            self.services.timers.set(p, key, ASK_TIMER + request.intent_id, due, clock=True)
        self.asks.put(p, key, pending)

    def _check_state(self, state: Any) -> None:
        kind = self._state_type
        if state is not None and kind is not None and not isinstance(state, kind):
            raise TypeError(
                f"actor {self.spec.name} returned a {type(state).__name__} as its state, "
                f"not a {kind.__name__}"
            )

    # -- supervision -------------------------------------------------------------------

    async def _failed(
        self,
        p: int,
        key: bytes,
        record: Record,
        intent: Intent,
        context: Context,
        exc: Exception,
    ) -> None:
        policy = self.spec.supervision
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        who = f"{self.spec.name}/{_id(key)}"
        if policy.strategy == "escalate":
            await self._escalate(p, key, record, intent, context, what, "escalate")
            return
        if policy.strategy == "resume":
            self._decisions["resume"].inc()
            log.warning("actor %s failed (%s): message set aside, actor resumes", who, what)
            await self.services.dead_letter(record, FAILED, what)
            await self._record(key, "resume", "policy", what, record)
            return
        if policy.strategy == "stop":
            self._decisions["stop"].inc()
            log.error("actor %s failed (%s): stopped", who, what)
            self.supervised.put(p, key, {"stopped": what})
            await self.services.dead_letter(record, FAILED, what)
            await self._record(key, "stop", "policy", what, record)
            return
        now = int(self.services.clock.time() * 1000)
        status = self.supervised.peek(p, key) or {}
        window = int(policy.within * 1000)
        restarts = [t for t in status.get("restarts", []) if now - t < window] + [now]
        if len(restarts) > policy.max_restarts:
            if self.spec.supervisor:  # past its limit, the policy escalates
                status.pop("restarts", None)
                _keep(self.supervised, p, key, status)
                await self._escalate(p, key, record, intent, context, what, "max-restarts")
                return
            self._decisions["gave-up"].inc()
            log.error(
                "actor %s failed %d times in %gs (%s): message set aside",
                who, len(restarts), policy.within, what,
            )
            await self.services.dead_letter(
                record, GAVE_UP, f"failed {len(restarts)} times in {policy.within:g}s: {what}"
            )
            status.pop("restarts", None)
            _keep(self.supervised, p, key, status)
            await self._record(key, "gave-up", "policy", what, record, attempts=len(restarts))
            return
        self._decisions["restart"].inc()
        delay = policy.delay(len(restarts), key)
        log.warning("actor %s failed (%s): restarting in %.2fs", who, what, delay)
        stash = [_entry(record, intent, context), *status.get("stash", [])]
        size = sum(len(orjson.dumps(e)) for e in stash)
        self.supervised.put(p, key, {"restarts": restarts, "stash": stash, "bytes": size})
        self.services.timers.set(p, key, RESTART_TIMER, now + int(delay * 1000), clock=True)
        await self._record(
            key, "restart", "policy", what, record, attempt=len(restarts), delay_s=round(delay, 3)
        )

    async def _escalate(
        self,
        p: int,
        key: bytes,
        record: Record,
        intent: Intent,
        context: Context,
        what: str,
        cause: str,
    ) -> None:
        """Hand the failure to the supervisor; the actor's messages wait in its stash (the
        failed one first) until it decides."""
        self._decisions["escalate"].inc()
        supervisor = self.spec.group(key)
        log.warning("actor %s/%s failed (%s): escalated to %s/%s", self.spec.name, _id(key),
                    what, self.spec.supervisor, supervisor)  # fmt: skip
        status = self.supervised.peek(p, key) or {}
        stash = [_entry(record, intent, context), *status.get("stash", [])]
        size = sum(len(orjson.dumps(e)) for e in stash)
        self.supervised.put(p, key, {"escalated": what, "stash": stash, "bytes": size})
        escalated = Escalated(
            supervisor=supervisor,
            actor_type=self.spec.name,
            actor=_id(key),
            topic=self.spec.topic,
            failure=what,
            cause=cause,
            message_type=type(intent).intent_type,
        )
        origin = Origin(self.spec.name, context, record.key)
        await self.services.effects.emit(
            escalated, origin, topic=self.spec.supervisor_topic, key=supervisor
        )
        await self._record(key, "escalate", "policy", what, record, supervisor=supervisor,
                           cause=cause)  # fmt: skip

    async def _directed(self, p: int, key: bytes, directive: Supervise) -> None:
        """A supervisor's decision on an escalated failure of this actor (or, group-wide,
        of one in its group)."""
        if directive.actor_type != self.spec.name or directive.actor != _id(key):
            log.warning("actor %s/%s: ignored a decision for %s/%s", self.spec.name,
                        _id(key), directive.actor_type, directive.actor)  # fmt: skip
            return
        status = self.supervised.peek(p, key) or {}
        if "escalated" not in status:
            log.info("actor %s/%s: no failure waits for the decision %s: ignored",
                     self.spec.name, _id(key), directive.decision)  # fmt: skip
            return
        by = f"supervisor {self.spec.supervisor}/{directive.supervisor}"
        failure = status.pop("escalated")
        decision = directive.decision
        now = now_ms(self.services.clock)
        due = now
        self._decisions[decision].inc()
        if decision == "stop":
            await self._stop(p, key, status, failure)
        else:
            if decision == "resume":  # the failed message (first) is set aside, the rest go on
                first, *rest = status["stash"]
                await self.services.dead_letter(_stashed_record(first), FAILED, failure)
                status["stash"] = rest
            else:  # restart: the whole stash again, after the first backoff
                due += int(self.spec.supervision.delay(1, key) * 1000)
            self.supervised.put(p, key, status)
            self.services.timers.set(p, key, RESTART_TIMER, due, clock=True)
        await self._record(key, decision, by, failure, one_for_all=directive.group_wide)
        if not directive.group_wide or decision == "resume":
            return
        if not self.spec.key_group:
            log.warning("actor type %s has no group: %s decided for %s/%s alone",
                        self.spec.name, by, self.spec.name, _id(key))  # fmt: skip
            return
        for other in self._group(p, key):
            if other == key:
                continue
            others = self.supervised.peek(p, other) or {}
            if others.get("stopped"):
                continue
            if decision == "stop":
                await self._stop(p, other, others, f"stopped with its group: {failure}")
            else:  # it waits out the backoff too; its messages meanwhile wait in its stash
                others.pop("escalated", None)  # the group restarts, this one with it
                others.setdefault("stash", [])
                others.setdefault("bytes", 0)
                self.supervised.put(p, other, others)
                self.services.timers.set(p, other, RESTART_TIMER, due, clock=True)
            await self._record(other, decision, by, f"with its group: {failure}",
                               one_for_all=True)  # fmt: skip

    async def _stop(self, p: int, key: bytes, status: dict[str, Any], why: str) -> None:
        """Stop an actor: what waited in its stash is set aside (``actor-stopped``)."""
        for entry in status.get("stash", []):
            await self.services.dead_letter(
                _stashed_record(entry), STOPPED, f"actor {self.spec.name}/{_id(key)} stopped: {why}"
            )
        self.services.timers.cancel(p, key, RESTART_TIMER)
        self.supervised.put(p, key, {"stopped": why})

    def _group(self, p: int, key: bytes) -> set[bytes]:
        """The actors of ``key``'s group on this partition (all of the group: its records
        are partitioned by it) that have state or a supervision status."""
        sep = (self.spec.key_group or "").encode()
        mine = group_of(key, sep)
        keys = {k for k, _ in self.store.items(p)} | {k for k, _ in self.supervised.items(p)}
        return {k for k in keys if group_of(k, sep) == mine}

    async def _record(
        self,
        key: bytes,
        decision: str,
        by: str,
        failure: str | None = None,
        record: Record | None = None,
        **facts: Any,
    ) -> None:
        """A supervision decision as a record on ``<topology>.supervision`` (keyed by the
        actor's id), sent with the batch, so exactly-once topologies commit it with it."""
        value = {
            "at": now_ms(self.services.clock),
            "actor_type": self.spec.name,
            "actor": _id(key),
            "decision": decision,
            "by": by,
            "failure": failure,
            "source": None
            if record is None or record.offset < 0
            else f"{record.topic}/{record.partition}/{record.offset}",
            **facts,
        }
        await self.services.producer.send(
            self.records_topic, orjson.dumps(value), key, [("pf-type", RECORD_TYPE)]
        )

    async def on_timer(self, timer: Timer) -> None:
        """A restart's backoff is over (replay the actor's stash in order), or an ask's
        timeout (the actor gets an AskTimedOut)."""
        if timer.name.startswith(ASK_TIMER):
            await self._timed_out(timer)
            return
        if timer.name.startswith(REMINDER_TIMER):
            await self._reminded(timer)
            return
        if timer.name != RESTART_TIMER:
            return
        p, key = timer.partition, timer.key
        status = self.supervised.peek(p, key) or {}
        stash = status.pop("stash", [])
        status.pop("bytes", None)
        _keep(self.supervised, p, key, status)
        for i, entry in enumerate(stash):
            try:
                record, intent, context = self._unstash(entry)
            except Exception as exc:  # a type no longer handled, say: set aside, go on
                log.error("actor %s/%s: a stashed message cannot be read back: %s",
                          self.spec.name, _id(key), exc)  # fmt: skip
                with contextlib.suppress(Exception):
                    await self.services.dead_letter(_stashed_record(entry), FAILED, str(exc))
                continue
            if not await self._turn(p, key, record, intent, context):
                after = self.supervised.peek(p, key) or {}
                if "stash" in after:  # backing off again: the rest waits behind it
                    after["stash"].extend(stash[i + 1 :])
                    self.supervised.put(p, key, after)
                    return

    async def _timed_out(self, timer: Timer) -> None:
        p, key = timer.partition, timer.key
        ask_id = timer.name.removeprefix(ASK_TIMER)
        pending = self.asks.peek(p, key) or {}
        entry = pending.get(ask_id)
        if entry is None or entry.get("expired"):
            return  # answered meanwhile
        # an answer that still comes is dropped, not taken as a message: remembered a while
        pending[ask_id] = {"expired": now_ms(self.services.clock)}
        for old in sorted(
            (i for i, e in pending.items() if e.get("expired")), key=lambda i: pending[i]["expired"]
        )[:-EXPIRED_KEPT]:
            del pending[old]
        _keep(self.asks, p, key, pending)
        expired = AskTimedOut(
            actor=_id(key), ask_id=ask_id, request=entry["request"], timeout=entry["timeout"]
        )
        context = Context.model_validate_json(entry["context"])
        await self._deliver(p, key, self._made(p, key, expired, timer.due), expired, context)

    async def _reminded(self, timer: Timer) -> None:
        """A reminder is due: fire it per its misfire policy, and set its next time."""
        p, key = timer.partition, timer.key
        name = timer.name.removeprefix(REMINDER_TIMER)
        table = self.reminders.peek(p, key) or {}
        entry = table.get(name)
        if entry is None or entry["due"] != timer.due:
            return  # forgotten or set again meanwhile: this timer is stale
        now = now_ms(self.services.clock)
        times, missed, nxt = firings(entry["due"], now, entry["every"], entry["misfire"])
        if times:  # the firings skipped before count with the next one that happens
            missed += entry.pop("skipped", 0)
        else:
            entry["skipped"] = entry.get("skipped", 0) + missed
        if nxt:
            entry["due"] = nxt
            self.services.timers.set(p, key, timer.name, nxt, clock=True)
        else:
            del table[name]
        _keep(self.reminders, p, key, table)
        context = Context.model_validate_json(entry["context"])
        for at in times:
            due = Reminder(actor=_id(key), name=name, scheduled=at, missed=missed)
            await self._deliver(p, key, self._made(p, key, due, at), due, context)

    def _made(self, p: int, key: bytes, intent: Intent, at: int) -> Record:
        """A record for a message the engine makes for the actor itself (a timeout, a
        reminder): never on a topic, it is what is set aside if its turn fails."""
        return Record(
            topic=self.own_topic,
            partition=p,
            offset=-1,
            key=key,
            value=intent.model_dump_json().encode(),
            headers=[("pf-type", type(intent).intent_type.encode())],
            timestamp=at,
        )

    def _unstash(self, entry: dict[str, Any]) -> tuple[Record, Intent, Context]:
        record = _stashed_record(entry)
        cls = _ENGINE_TYPES.get(entry["type"]) or self.types[entry["type"]]
        intent = cls.model_validate_json(entry["intent"])
        context = Context.model_validate_json(entry["context"])
        return record, intent, context

    def state(self, key: bytes | None) -> Any:
        return self.store.find(key)

    def inspect(self, key: bytes | None) -> ActorView:
        """The actor as ``packetflow actors show`` would say, from this worker's stores."""
        view = ActorView(self.spec.name, _id(key or b""))
        for name, store in (("", self.store), ("supervision", self.supervised),
                            ("asks", self.asks), ("reminders", self.reminders)):  # fmt: skip
            value = store.find(key)
            if value is not None:
                fold(view, name, value)
        return view


def _stashed_record(entry: dict[str, Any]) -> Record:
    return Record(
        topic=entry["topic"],
        partition=entry["partition"],
        offset=entry["offset"],
        key=_unb64(entry["key"]),
        value=_unb64(entry["value"]),
        headers=[(k, base64.b64decode(v)) for k, v in entry["headers"]],
        timestamp=entry["timestamp"],
    )


def _entry(record: Record, intent: Intent, context: Context) -> dict[str, Any]:
    """A stashed message: the record as it came (to set it aside byte for byte) and the
    intent and authorised context it was decoded into (to run it again)."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": _b64(record.key),
        "value": _b64(record.value),
        "headers": [(k, base64.b64encode(v).decode()) for k, v in record.headers],
        "timestamp": record.timestamp,
        "type": type(intent).intent_type,
        "intent": intent.model_dump_json(),
        "context": context.model_dump_json(),
    }


_ENGINE_TYPES: dict[str, type[Intent]] = {
    t.intent_type: t for t in (AskTimedOut, Reminder)
}  # messages the engine makes for an actor, stashed like any other


def _keep(store: KeyedStore, p: int, key: bytes, value: dict[str, Any]) -> None:
    """Store an actor's bookkeeping (supervision, asks, reminders), or drop it when empty."""
    if value:
        store.put(p, key, value)
    else:
        store.delete(p, key)


# what the runtime takes out of an actor's list of effects
_ACTOR_EFFECTS = (Ask, Remind, Forget, StartTimer, Decide)


def _nests_actor_effect(effect: Any) -> bool:
    """Whether a composition holds an ask/remind/forget/decide somewhere inside it."""
    if isinstance(effect, _ACTOR_EFFECTS):
        return True
    if not dataclasses.is_dataclass(effect) or isinstance(effect, type):
        return False
    for f in dataclasses.fields(effect):
        value = getattr(effect, f.name, None)
        inner = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(v, Effect) and _nests_actor_effect(v) for v in inner):
            return True
    return False


def takes_id(fn: Callable[..., Any]) -> bool:
    """Whether an actor's function takes the actor's id as a fourth argument."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) not in (3, 4):
        raise ValueError(
            f"an actor's function takes (message, ctx, state) or (message, ctx, state, "
            f"actor_id), not {len(params)} arguments"
        )
    return len(params) == 4


def now_ms(clock: Any) -> int:
    return int(clock.time() * 1000)


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _id(key: bytes) -> str:
    return key.decode(errors="replace")
