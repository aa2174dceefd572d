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

This package is the worked example of a substrate: ``declare.py`` (what users call, taking
the topology), ``window_agent.py`` and ``table.py`` (agents on the engine's contract,
``packetflow.engine.agent``), ``window_kinds.py`` and ``aggregate.py`` (pure). May import:
``packetflow.core`` and ``packetflow.engine`` (its contract, topology and codec).
"""

from __future__ import annotations

from packetflow.core.backpressure import (
    Backpressure,
    block,
    buffer,
    drop_newest,
    drop_oldest,
    sample,
    throttle,
)
from packetflow.streams import aggregate as agg
from packetflow.streams.aggregate import Aggregate
from packetflow.streams.declare import table, window
from packetflow.streams.table import Table, TableError
from packetflow.streams.window_agent import WindowResult
from packetflow.streams.window_kinds import Count, Hopping, Session, Sliding, Tumbling, Window

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
