"""Declaring streams on a topology: :func:`window` and :func:`table`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from packetflow.core.intent import Intent, intent_types_of
from packetflow.engine.repartition import KeyBy
from packetflow.engine.topology import Topology, TopologyError
from packetflow.streams.aggregate import Aggregate
from packetflow.streams.table import Table, TableSpec
from packetflow.streams.window_agent import TimeOf, WindowSpec
from packetflow.streams.window_kinds import Window, window_of

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R", bound=Intent)


def window(
    topology: Topology,
    intent: Any,
    *,
    topic: str,
    every: Window,
    aggregate: Aggregate,
    time: TimeOf = None,
    grace: float = 0.0,
    idle: float = 1.0,
    emit: str = "final",
    key_by: KeyBy | None = None,
    name: str | None = None,
    emits: Iterable[type[Intent]] = (),
    partitions: int | None = None,
    public: bool = False,
) -> Callable[[F], F]:
    """Aggregate ``intent`` (a class or union) read from ``topic`` per key in windows.

    ``every`` is the window kind; ``aggregate`` folds the intents; ``time`` is the event
    time (an intent field holding a datetime or epoch seconds, a function of the intent, or
    None for the record timestamp); ``grace`` how many seconds past a window's end it still
    takes intents; ``idle`` how many seconds a caught-up partition waits before its
    watermark follows the worker's clock (so windows close with no new record); ``emit``
    is ``"final"`` (the decorated function gets each window once, when it closes) or
    ``"updates"`` (on every change); ``key_by`` re-keys the stream first through a
    repartition topic. The function takes ``(result: WindowResult, ctx)`` and returns
    effects, like a reactor. ``public=True`` accepts intent types that require no
    capability and are not internal (as for a reactor).
    """
    types = intent_types_of(intent)
    every = window_of(every)  # Tumbling (the class) instead of Tumbling(10): refuse it now

    def register(fn: F) -> F:
        agent_name = name or fn.__name__
        source = topic
        if key_by is not None:
            source = topology.rekey(agent_name, topic, types, key_by, partitions, public)
        doc = (fn.__doc__ or "").strip().splitlines()
        try:
            spec = WindowSpec(
                name=agent_name,
                topic=source,
                intent_types=types,
                fn=fn,
                window=every,
                aggregate=aggregate,
                time=time,
                grace_ms=int(grace * 1000),
                idle_ms=int(idle * 1000),
                emit=emit,
                late_topic=topology.late_topic,
                emits=tuple(emits),
                description=doc[0] if doc else "",
                public=public,
            )
        except ValueError as exc:
            raise TopologyError(f"window {agent_name}: {exc}") from None
        topology.add_agent(spec, partitions)
        return fn

    return register


def table(
    topology: Topology,
    row: type[R],
    *,
    topic: str | None = None,
    name: str | None = None,
    scope: str = "partitioned",
    partitions: int | None = None,
    public: bool = False,
) -> Table[R]:
    """A table of the newest ``row`` intent per record key of ``topic`` (default: ``name``,
    default the row's class name in lower case); read it with ``.get(key)`` in reactors.
    ``public=True`` takes rows that require no capability from anyone (as for a reactor)."""
    table_name = name or row.__name__.lower()
    try:
        spec = TableSpec(
            name=table_name, topic=topic or table_name, row=row, scope=scope, public=public
        )
    except ValueError as exc:
        raise TopologyError(f"table {table_name}: {exc}") from None
    topology.add_agent(spec, partitions)
    return Table(spec)


