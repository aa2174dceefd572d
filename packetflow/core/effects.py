"""Effects as data: what a reactor wants to happen, interpreted later by the engine.

A reactor returns effects instead of doing I/O, so it stays a pure function you can test
by looking at its return value. Compositions nest freely::

    retry(call(charge_card, order), attempts=5) >> emit(Charged(order=order.id))

Results: ``Emit``/``Reply``/``FanOut`` give :class:`Delivery` records, ``Call`` gives the
function's return value, ``Sequential``/``Parallel`` a list, ``Pipeline`` its last step's.

The set is open: a substrate (actors' ``Tell``, temporal's schedules) or an interface (an MCP
call) declares its own :class:`Effect` subclass, and registers how to carry it out with
``topology.register_effect(MyEffect, handler)``. An effect nobody handles is an error when
the reactor returns it, not a silent no-op.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from packetflow.core.context import Context
from packetflow.core.intent import Intent


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where an emitted intent landed, once the broker acknowledged it."""

    topic: str
    partition: int
    offset: int


class Effect:
    """What a reactor wants done, as data. Subclass it for an effect of your own (a frozen
    dataclass, as the ones here), and register its handler on the topology."""

    __slots__ = ()

    def __rshift__(self, other: Effect) -> Sequential:
        """``a >> b``: run ``a`` then ``b``."""
        left = self.effects if isinstance(self, Sequential) else (self,)
        return Sequential((*left, other))

    def __and__(self, other: Effect) -> Parallel:
        """``a & b``: run ``a`` and ``b`` concurrently."""
        left = self.effects if isinstance(self, Parallel) else (self,)
        return Parallel((*left, other))


@dataclass(frozen=True, slots=True)
class Emit(Effect):
    """Send ``intent`` to ``topic`` (default: the topic its reactor consumes) with ``key``."""

    intent: Intent
    topic: str | None = None
    key: str | None = None
    context: Context | None = None  # default: the reactor's context, inherited


@dataclass(frozen=True, slots=True)
class Reply(Effect):
    """Answer the request: emit ``intent`` to the context's ``reply_to`` topic."""

    intent: Intent


@dataclass(frozen=True, slots=True)
class FanOut(Effect):
    """Emit the same intent to several topics."""

    intent: Intent
    topics: tuple[str, ...]
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Call(Effect):
    """Call a function (sync or async) for its side effect; its return value is the result."""

    fn: Callable[..., Any | Awaitable[Any]]
    args: tuple[Any, ...] = ()
    name: str = ""


@dataclass(frozen=True, slots=True)
class Sequential(Effect):
    """Run effects one after another; a failure stops the rest."""

    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Parallel(Effect):
    """Run effects concurrently; all must succeed."""

    effects: tuple[Effect, ...]


@dataclass(frozen=True, slots=True)
class Conditional(Effect):
    """Run ``then`` if ``condition`` (a bool or no-argument callable) holds, else ``otherwise``."""

    condition: bool | Callable[[], bool]
    then: Effect
    otherwise: Effect | None = None


@dataclass(frozen=True, slots=True)
class Pipeline(Effect):
    """Run ``first``; feed each result to the next step, which returns the next effect or None."""

    first: Effect
    steps: tuple[Callable[[Any], Effect | None], ...]


@dataclass(frozen=True, slots=True)
class Retry(Effect):
    """Retry ``effect`` on failure with capped exponential backoff."""

    effect: Effect
    attempts: int = 3
    base_delay: float = 0.1
    factor: float = 2.0
    max_delay: float = 10.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("retry attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("retry delays must be >= 0 and factor >= 1")

    def delays(self) -> Iterator[float]:
        """The waits between attempts: base, base*factor, ... each capped at max_delay."""
        delay = self.base_delay
        for _ in range(self.attempts - 1):
            yield min(delay, self.max_delay)
            delay *= self.factor


# The effects the engine itself knows how to carry out.
BUILTIN_EFFECTS = (Emit, Reply, FanOut, Call, Sequential, Parallel, Conditional, Pipeline, Retry)

# What a reactor may return as its effects: nothing, one, or many; a bare intent means emit it.
Effects: TypeAlias = Effect | Intent | Iterable["Effect | Intent"] | None


def emit(intent: Intent, topic: str | None = None, key: str | None = None) -> Emit:
    return Emit(intent, topic, key)


def reply(intent: Intent) -> Reply:
    return Reply(intent)


def fan_out(intent: Intent, *topics: str, key: str | None = None) -> FanOut:
    if not topics:
        raise ValueError("fan_out needs at least one topic")
    return FanOut(intent, topics, key)


def call(fn: Callable[..., Any], *args: Any, name: str = "") -> Call:
    return Call(fn, args, name or getattr(fn, "__name__", "call"))


def sequential(*effects: Effect) -> Sequential:
    return Sequential(effects)


def parallel(*effects: Effect) -> Parallel:
    return Parallel(effects)


def when(
    condition: bool | Callable[[], bool], then: Effect, otherwise: Effect | None = None
) -> Conditional:
    return Conditional(condition, then, otherwise)


def pipeline(first: Effect, *steps: Callable[[Any], Effect | None]) -> Pipeline:
    return Pipeline(first, steps)


def retry(
    effect: Effect,
    attempts: int = 3,
    *,
    base_delay: float = 0.1,
    factor: float = 2.0,
    max_delay: float = 10.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Retry:
    return Retry(effect, attempts, base_delay, factor, max_delay, retry_on)


def normalize(effects: Effects) -> list[Effect]:
    """A reactor's return value as a flat list of effects (bare intents become emits)."""
    if effects is None:
        return []
    if isinstance(effects, Effect):
        return [effects]
    if isinstance(effects, Intent):
        return [Emit(effects)]
    out: list[Effect] = []
    for item in effects:
        if isinstance(item, Intent):
            out.append(Emit(item))
        elif isinstance(item, Effect):
            out.append(item)
        else:
            raise TypeError(f"reactor returned {type(item).__name__}, not an effect or intent")
    return out
