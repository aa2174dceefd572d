"""Windowed aggregation: an agent that folds a topic's intents into event-time windows.

Declared with :func:`packetflow.streams.window`. Per partition it keeps a **watermark**: the
largest event time seen there, which also follows the worker's clock once the partition has
been caught up (nothing left to read) for ``idle`` seconds, so windows close as time passes
even when no record arrives, while a backlog being read (or a burst with short pauses) is
judged by its own event time. A window closes when the watermark reaches its end plus
``grace``; in ``final`` mode its result is then handed to the user's function, whose effects
(intents) are emitted like a reactor's, carrying the context of the window's last
contributor. In ``updates`` mode the function is called on every change instead. Records
whose windows have all closed go to the topology's late topic with the reason. Open windows
and the watermark live in a changelog-backed store, so a restarted worker, or the next owner
of a partition, carries on with the same windows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from packetflow.core.context import Context
from packetflow.core.effects import Effects, normalize
from packetflow.core.intent import Intent, field_getter
from packetflow.core.reactor import StateSpec
from packetflow.engine.agent import (
    AgentRuntime,
    AgentServices,
    AgentSpec,
    Origin,
    StoreDecl,
    TopicDecl,
)
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTENT_TYPE_HEADER,
    CONTEXT_HEADER,
    ERROR_HEADER,
    EVENT_TIME_HEADER,
    JSON,
    REACTOR_HEADER,
    REASON_HEADER,
    TOKEN_HEADER,
    WATERMARK_HEADER,
    decode_context,
    one_line,
)
from packetflow.engine.transport import Headers, Record
from packetflow.streams.aggregate import Aggregate
from packetflow.streams.window_kinds import CTX, END, START, Slot, State, Window

log = logging.getLogger("packetflow.streams")

EMIT_MODES = ("final", "updates")
TimeOf = str | Callable[[Intent], Any] | None
_WATERMARK = b"w"  # store key of a partition's watermark; keys of records start with k or n
_NO_WATERMARK = -(2**62)


@dataclass(frozen=True)
class WindowResult:
    """One window of one key: what the user's function receives.

    ``start`` / ``end`` bound the window's event time: ``[start, end)`` for tumbling and
    hopping windows, ``(start, end]`` for sliding ones, the first and last intent's time for
    session and count windows. ``value`` is the aggregate's result; ``count`` how many
    intents it folded; ``final`` whether the window has closed.
    """

    window: str
    key: str | None
    start: datetime
    end: datetime
    value: Any
    count: int
    final: bool


def event_time_function(time: TimeOf) -> Callable[[Intent, Record], int]:
    """Event time in ms: an intent field (datetime, or seconds since the epoch), a function
    of the intent returning either, or the record's timestamp."""
    if time is None:
        return lambda intent, record: record.timestamp
    pick = field_getter(time, "take the event time from")

    def of(intent: Intent, record: Record) -> int:
        value = pick(intent)
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return int(value.timestamp() * 1000)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value * 1000)
        raise TypeError(f"event time must be a datetime or seconds since the epoch, got {value!r}")

    return of


def _bytes_as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(f"window state holds {type(value).__name__}, which is not JSON")


WINDOW_STATE: StateSpec[Any] = StateSpec(
    initial=dict,
    encode=lambda value: orjson.dumps(value, default=_bytes_as_text),
    decode=orjson.loads,
    type_name="windows",
)


@dataclass(frozen=True, kw_only=True)
class WindowSpec(AgentSpec):
    """A declared windowed aggregation (see :func:`packetflow.streams.window`)."""

    kind: ClassVar[str] = "window"
    timers: ClassVar[bool] = True  # closing times, in the engine's timer service
    durable_timers: ClassVar[bool] = False  # set again from the open windows when assigned
    fn: Callable[[WindowResult, Context], Effects]
    window: Window
    aggregate: Aggregate
    time: TimeOf
    grace_ms: int
    idle_ms: int
    emit: str
    late_topic: str
    stores: tuple[StoreDecl, ...] = field(default=(StoreDecl("", WINDOW_STATE),))

    def __post_init__(self) -> None:
        if self.emit not in EMIT_MODES:
            raise ValueError(f"emit={self.emit!r}: use 'final' or 'updates'")
        if self.window.needs_merge and self.aggregate.merge is None:
            raise ValueError(
                f"{self.window.kind} windows merge partial aggregates: give the aggregate a merge"
            )
        if self.grace_ms < 0 or self.idle_ms < 0:
            raise ValueError("grace and idle must be >= 0 seconds")

    def topics(self) -> list[TopicDecl]:
        return [TopicDecl(self.late_topic)]

    def describe(self) -> dict[str, Any]:
        time = self.time if isinstance(self.time, str) or self.time is None else "a function"
        return {
            "window": self.window.describe(),
            "aggregate": self.aggregate.describe(),
            "event_time": time or "record timestamp",
            "grace_s": self.grace_ms / 1000,
            "idle_s": self.idle_ms / 1000,
            "emit": self.emit,
            "late_topic": self.late_topic,
        }

    def runtime(self, services: AgentServices) -> AgentRuntime:
        return WindowRuntime(self, services)


class WindowRuntime(AgentRuntime):
    """One worker's windows: the store, a watermark per partition, and each window's closing
    time as an event-time timer (``services.timers``), taken as the watermark passes it."""

    ticks = True

    def __init__(self, spec: WindowSpec, services: AgentServices) -> None:
        self.spec = spec
        self.services = services
        self.store = services.store
        self.timers = services.timers
        self.window = spec.window
        self.agg = spec.aggregate
        self.grace = spec.grace_ms
        self.time_of = event_time_function(spec.time)
        self.value_of = spec.aggregate.value_of()
        self.updates = spec.emit == "updates"
        self.late_topic = services.names.physical(spec.late_topic)
        self.idle = spec.idle_ms
        self.watermarks: dict[int, int] = {}
        self.quiet_since: dict[int, int] = {}  # clock ms since which a partition is caught up
        self._unsaved: set[int] = set()  # partitions whose watermark the store does not hold
        metrics, window = services.metrics, {"window": spec.name}
        self._late_count = metrics.counter(
            "packetflow_window_late_total", "records past their windows' grace", "late", **window
        )
        self._closed_count = metrics.counter(
            "packetflow_window_closed_total", "windows closed", "windows_closed", **window
        )
        self._open_count = metrics.gauge(
            "packetflow_windows_open", "windows open now (each closes at its end + grace)",
            "windows_open", **window,
        )  # fmt: skip


    # -- records -------------------------------------------------------------------------

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        p = record.partition
        t = self.time_of(intent, record)
        self.quiet_since.pop(p, None)
        watermark = self.watermarks.get(p, _NO_WATERMARK)
        # windows already due close before this record is added, as if a tick came between:
        # otherwise where a batch boundary falls would change what they hold
        due = self.timers.next_due(p, clock=False)
        if due is not None and due <= watermark and await self._close_due(p, watermark):
            self._unsaved.add(p)
        key = _store_key(record.key)
        store = self.store
        state = store.peek(p, key)
        if state is None:
            state = self.window.new_state()
        ctx = _context_headers(record.headers)
        added = self.window.add(
            state, t, self.value_of(intent), ctx, watermark, self.grace, self.agg
        )
        if added.late:
            await self._late(record, t, watermark)
            return
        store.put(p, key, state)
        if self.window.timed:
            for slot in added.opened:
                self._schedule(p, key, slot)
        if t > watermark:
            self.watermarks[p] = t
            self._unsaved.add(p)  # stored once per batch, by the tick that follows it
        if self.updates:
            for slot in added.changed:
                await self._emit(record.key, state, slot, final=False)
        for slot in added.full:  # count windows close when full
            if not self.updates:
                await self._emit(record.key, state, slot, final=True)
            self.window.remove(state, slot, watermark, self.grace)
            self._closed_count.inc()
        if added.full and self.window.empty(state):
            store.delete(p, key)

    def _schedule(self, p: int, key: bytes, slot: Slot) -> None:
        """The slot's window closes when the watermark reaches its end plus grace."""
        self.timers.set(p, key, str(slot[START]), self.window.close_at(slot, self.grace))

    async def _late(self, record: Record, t: int, watermark: int) -> None:
        self._late_count.inc()
        await self.services.set_aside(
            self.late_topic,
            record,
            [
                (REASON_HEADER, "late"),
                (
                    ERROR_HEADER,
                    f"event time {_iso(t)} falls only in windows already closed "
                    f"(watermark {_iso(watermark)}, grace {self.grace / 1000:g}s)",
                ),
                (REACTOR_HEADER, self.spec.name),
                (EVENT_TIME_HEADER, str(t)),
                (WATERMARK_HEADER, str(watermark)),
            ],
        )

    # -- time passing --------------------------------------------------------------------

    async def tick(self) -> None:
        if not self.window.timed:
            return
        now = int(self.services.clock.time() * 1000)
        for p in sorted(self.services.owned()):
            watermark = self.watermarks.get(p, _NO_WATERMARK)
            if await self.services.caught_up(p):
                quiet = now - self.quiet_since.setdefault(p, now)
                if quiet >= self.idle and now > watermark:
                    watermark = self.watermarks[p] = now  # stored if it closes anything
            else:
                self.quiet_since.pop(p, None)
            if await self._close_due(p, watermark):
                self._unsaved.add(p)
        # the watermarks go to the changelog with the batch's window changes (the tick runs
        # after every batch), so a restarted worker judges lateness as this one did
        for p in self._unsaved:
            if p in self.watermarks:
                self.store.put(p, _WATERMARK, self.watermarks[p])
        self._unsaved.clear()
        self._open_count.set(self.timers.live())  # one close timer per open window

    async def _close_due(self, p: int, watermark: int) -> int:
        """Close the windows of partition ``p`` due at ``watermark``; returns how many."""
        store, window = self.store, self.window
        closed = 0
        for timer in self.timers.pop_due(p, watermark):
            key = timer.key
            state = store.peek(p, key)
            slot = None if state is None else window.find(state, int(timer.name))
            if state is None or slot is None or window.close_at(slot, self.grace) != timer.due:
                continue  # closed already, or merged into another session
            if not self.updates:  # before remove, which prunes what a sliding result reads
                await self._emit(_record_key(key), state, slot, final=True)
            window.remove(state, slot, watermark, self.grace)
            self._closed_count.inc()
            closed += 1
            if not window.empty(state):
                store.put(p, key, state)
            else:
                store.delete(p, key)
        return closed

    # -- results -------------------------------------------------------------------------

    def result(self, key: bytes | None, state: State, slot: Slot, *, final: bool) -> WindowResult:
        acc, count = self.window.result(state, slot, self.agg)
        return WindowResult(
            window=self.spec.name,
            key=None if key is None else key.decode(errors="replace"),
            start=_dt(slot[START]),
            end=_dt(slot[END]),
            value=self.agg.finish(acc),
            count=count,
            final=final,
        )

    async def _emit(self, key: bytes | None, state: State, slot: Slot, *, final: bool) -> None:
        result = self.result(key, state, slot, final=final)
        raw_ctx, raw_caps, raw_token = (_raw(v) for v in (slot[CTX] or (None, None, None)))
        context = decode_context(raw_ctx, raw_caps, raw_token)
        try:
            effects = normalize(self.spec.fn(result, context))
            await self.services.effects.run_effects(effects, Origin(self.spec.name, context, key))
        except Exception as exc:
            if not final:
                raise  # an update: the record that caused it is dead-lettered
            # a window closing by time has no record to dead-letter: keep its result instead
            self.services.failed()
            message = one_line(exc)
            log.warning("window %s: emitting %s failed: %s", self.spec.name, result, message)
            names = self.services.names
            await self.services.producer.send(
                names.physical(names.dead_letters),
                _result_json(result),
                key,
                [
                    (REASON_HEADER, b"reactor-error"),
                    (ERROR_HEADER, message[:1000].encode()),
                    (REACTOR_HEADER, self.spec.name.encode()),
                    (CONTENT_TYPE_HEADER, JSON),
                ],
            )

    # -- partitions ----------------------------------------------------------------------

    async def assigned(self, partitions: set[int]) -> None:
        window = self.window
        for p in partitions:
            self.watermarks.pop(p, None)
            live = {(t.key, t.name) for t in self.timers.items(p)}
            for key, value in self.store.items(p):
                if key == _WATERMARK:
                    self.watermarks[p] = int(value)
                elif window.timed:
                    for slot in value["s"]:  # close times follow from the open windows
                        if (key, str(slot[START])) not in live:
                            self._schedule(p, key, slot)

    async def revoked(self, partitions: set[int]) -> None:
        for p in partitions:
            self.watermarks.pop(p, None)
            self.quiet_since.pop(p, None)
            self._unsaved.discard(p)

    def state(self, key: bytes | None) -> list[WindowResult] | None:
        """The open windows of ``key``, oldest first (None when it has none here)."""
        found = self.store.find(_store_key(key))
        if not found or not found.get("s"):
            return None
        slots = sorted(found["s"], key=lambda s: (s[START], s[END]))
        return [self.result(key, found, slot, final=False) for slot in slots]

    def watermark(self, partition: int) -> datetime | None:
        value = self.watermarks.get(partition)
        return None if value is None else _dt(value)


def _context_headers(headers: Headers) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The raw context, capabilities and token headers (one pass; the last of each wins)."""
    ctx = caps = token = None
    for name, value in headers:
        if name == CONTEXT_HEADER:
            ctx = value
        elif name == TOKEN_HEADER:
            token = value
        elif name == CAPABILITIES_HEADER:
            caps = value
    return ctx, caps, token


def _store_key(key: bytes | None) -> bytes:
    return b"n" if key is None else b"k" + key


def _record_key(key: bytes) -> bytes | None:
    return None if key == b"n" else key[1:]


def _raw(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso(ms: int) -> str:
    return "-" if ms == _NO_WATERMARK else _dt(ms).isoformat()


def _result_json(result: WindowResult) -> bytes:
    return orjson.dumps(
        {
            "window": result.window,
            "key": result.key,
            "start": result.start,
            "end": result.end,
            "value": result.value,
            "count": result.count,
        },
        default=str,
    )
