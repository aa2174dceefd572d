"""Worker metrics: the engine's own counters and a registry every substrate adds to.

:class:`WorkerMetrics` counts what the engine does (records, batches, commits, set-aside
records, latencies); :class:`MetricsRegistry` holds what substrates register themselves
(a window's late records and closed windows, later actors and schedules), with one naming
scheme (``packetflow_<what>_<unit>``, Prometheus style) so the observability layer can
export them all from one place. The hot path only increments plain numbers.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000)
# Histogram bucket bounds in milliseconds (Prometheus style: each counts values <= bound).
LATENCY_BUCKETS_MS = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
)  # fmt: skip


@dataclass
class Histogram:
    """Counts of observations per bucket, plus their sum and maximum: cheap, and exportable."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_MS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.count += weight
        self.total += value * weight
        if value > self.max:
            self.max = value

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the ``q`` quantile (the max past the last)."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen >= rank and n:
                return min(self.bounds[i], self.max) if i < len(self.bounds) else self.max
        return self.max

    def snapshot(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.total / self.count if self.count else None,
            "p50": self.quantile(0.5),
            "p99": self.quantile(0.99),
            "max": self.max if self.count else None,
        }


class _Child:
    """One labelled series of a metric: a plain number, or a histogram."""

    __slots__ = ("histogram", "value")

    def __init__(self, histogram: bool) -> None:
        self.value = 0.0
        self.histogram = Histogram() if histogram else None

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float, weight: int = 1) -> None:
        assert self.histogram is not None
        self.histogram.observe(value, weight)


@dataclass
class Metric:
    """A registered metric: kind, name, help, and its series by label values."""

    kind: str  # "counter", "gauge" or "histogram"
    name: str
    help: str
    short: str
    series: dict[tuple[tuple[str, str], ...], _Child] = field(default_factory=dict)


class MetricsRegistry:
    """Metrics substrates register; get-or-create, so registering twice is harmless."""

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}

    def counter(self, name: str, help: str, short: str = "", **labels: str) -> _Child:
        return self._child("counter", name, help, short, labels)

    def gauge(self, name: str, help: str, short: str = "", **labels: str) -> _Child:
        return self._child("gauge", name, help, short, labels)

    def histogram(self, name: str, help: str, short: str = "", **labels: str) -> _Child:
        return self._child("histogram", name, help, short, labels)

    def _child(
        self, kind: str, name: str, help: str, short: str, labels: dict[str, str]
    ) -> _Child:
        metric = self.metrics.get(name)
        if metric is None:
            metric = self.metrics[name] = Metric(kind, name, help, short)
        elif metric.kind != kind:
            raise ValueError(f"metric {name} is a {metric.kind}, not a {kind}")
        key = tuple(sorted(labels.items()))
        child = metric.series.get(key)
        if child is None:
            child = metric.series[key] = _Child(kind == "histogram")
        return child

    def value(self, name: str, **labels: str) -> float:
        """The current value of one series (0 when it does not exist)."""
        metric = self.metrics.get(name)
        child = None if metric is None else metric.series.get(tuple(sorted(labels.items())))
        return 0.0 if child is None else child.value

    def snapshot(self) -> dict[str, Any]:
        """Metrics with a ``short`` name, keyed by their one label's value (counts as ints)."""
        out: dict[str, Any] = {}
        for metric in self.metrics.values():
            if not metric.short or metric.kind == "histogram":
                continue
            out[metric.short] = {
                (labels[0][1] if labels else ""): _number(child.value)
                for labels, child in metric.series.items()
                if child.value
            }
        return out


def _number(value: float) -> float | int:
    return int(value) if value == int(value) else value


@dataclass
class WorkerMetrics:
    """What a worker has done since it started."""

    consumed: int = 0
    batches: int = 0
    commits: int = 0
    emitted: int = 0
    processed: Counter[str] = field(default_factory=Counter)  # per reactor or agent
    errors: Counter[str] = field(default_factory=Counter)  # per reactor or agent
    dead_lettered: Counter[str] = field(default_factory=Counter)  # per reason
    denied: Counter[str] = field(default_factory=Counter)  # per intent type
    denied_reasons: Counter[str] = field(default_factory=Counter)  # per reason
    revocations: int = 0  # revocation records applied
    restored: Counter[str] = field(default_factory=Counter)  # state entries per reactor
    dropped: Counter[str] = field(default_factory=Counter)  # per reactor, by backpressure
    dropped_by: Counter[str] = field(default_factory=Counter)  # per strategy
    buffered: dict[str, int] = field(default_factory=dict)  # per reactor: intents waiting now
    buffered_peak: dict[str, int] = field(default_factory=dict)  # per reactor: most at once
    pauses: Counter[str] = field(default_factory=Counter)  # per reactor: times it paused input
    truncated: int = 0  # set-aside copies too large for their topic, kept truncated
    crash_loops: int = 0  # records set aside after workers died on them
    broker_retries: int = 0  # batches retried after the broker failed them
    rebalances: int = 0  # times partitions were assigned to or revoked from this worker
    aborted: int = 0  # exactly-once transactions aborted (a failed batch, a rewind)
    # records per batch fetched (bounds: counts, not ms)
    batch_sizes: Histogram = field(
        default_factory=lambda: Histogram(BATCH_BUCKETS, [0] * (len(BATCH_BUCKETS) + 1))
    )
    # per reactor or agent: ms from the worker fetching a record to its handling finished
    latency: dict[str, Histogram] = field(default_factory=dict)
    # what substrates count themselves (a window's late records, ...)
    registry: MetricsRegistry = field(default_factory=MetricsRegistry)

    def observe_latency(self, name: str, ms: float, weight: int = 1) -> None:
        histogram = self.latency.get(name)
        if histogram is None:
            histogram = self.latency[name] = Histogram()
        histogram.observe(ms, weight)

    def snapshot(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "batches": self.batches,
            "commits": self.commits,
            "emitted": self.emitted,
            "processed": dict(self.processed),
            "errors": dict(self.errors),
            "dead_lettered": dict(self.dead_lettered),
            "denied": dict(self.denied),
            "denied_reasons": dict(self.denied_reasons),
            "revocations": self.revocations,
            "restored": dict(self.restored),
            "dropped": dict(self.dropped),
            "dropped_by": dict(self.dropped_by),
            "buffered": dict(self.buffered),
            "buffered_peak": dict(self.buffered_peak),
            "pauses": dict(self.pauses),
            "truncated": self.truncated,
            "crash_loops": self.crash_loops,
            "broker_retries": self.broker_retries,
            "rebalances": self.rebalances,
            "aborted": self.aborted,
            **self.registry.snapshot(),
        }
