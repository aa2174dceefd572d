"""The stream substrate: event-time windows, tables to join against, and backpressure.

Everything here is declared on a topology and runs inside the same workers as its
reactors::

    from packetflow.streams import Tumbling, agg, block, table, window

    @window(topology, Reading, topic="readings", every=Tumbling(10), aggregate=agg.mean("celsius"),
            time="taken_at", grace=2)
    def ten_second_mean(result: WindowResult, ctx: Context):
        return AverageTemperature(device=result.key, start=result.start, celsius=result.value)

    limits = table(topology, LimitSet)            # limits.get(account) inside a reactor

    @topology.reactor(Alert, topic="alerts", backpressure=block(100))
    async def page_someone(alert, ctx): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from packetflow.core.backpressure import (
    Backpressure,
    block,
    buffer,
    drop_newest,
    drop_oldest,
    sample,
    throttle,
)
from packetflow.core.intent import Intent, intent_types_of
from packetflow.engine.repartition import KeyBy
from packetflow.engine.topology import Topology, TopologyError
from packetflow.streams import aggregate as agg
from packetflow.streams.aggregate import Aggregate
from packetflow.streams.table import Table, TableError, TableSpec
from packetflow.streams.windowed import TimeOf, WindowResult, WindowSpec
from packetflow.streams.windows import (
    Count,
    Hopping,
    Session,
    Sliding,
    Tumbling,
    Window,
    window_of,
)

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
                agent_name,
                source,
                types,
                fn,
                every,
                aggregate,
                time=time,
                grace=grace,
                idle=idle,
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
        spec = TableSpec(table_name, topic or table_name, row, scope, public)
    except ValueError as exc:
        raise TopologyError(f"table {table_name}: {exc}") from None
    topology.add_agent(spec, partitions)
    return Table(spec)


__all__ = [
    "Aggregate",
    "Backpressure",
    "Count",
    "Hopping",
    "Session",
    "Sliding",
    "Table",
    "TableError",
    "Tumbling",
    "Window",
    "WindowResult",
    "agg",
    "block",
    "buffer",
    "drop_newest",
    "drop_oldest",
    "sample",
    "table",
    "throttle",
    "window",
]
