"""Worker counters, readable from Python now and exported by the observability layer later."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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
    late: Counter[str] = field(default_factory=Counter)  # per window: records past grace
    dropped: Counter[str] = field(default_factory=Counter)  # per reactor, by backpressure
    dropped_by: Counter[str] = field(default_factory=Counter)  # per strategy
    buffered: dict[str, int] = field(default_factory=dict)  # per reactor: intents waiting now
    buffered_peak: dict[str, int] = field(default_factory=dict)  # per reactor: most at once
    pauses: Counter[str] = field(default_factory=Counter)  # per reactor: times it paused input
    windows_closed: Counter[str] = field(default_factory=Counter)  # per window
    truncated: int = 0  # set-aside copies too large for their topic, kept truncated
    crash_loops: int = 0  # records set aside after workers died on them
    broker_retries: int = 0  # batches retried after the broker failed them
    # per reactor or agent: ms from the worker fetching a record to its handling finished
    latency: dict[str, Histogram] = field(default_factory=dict)

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
            "late": dict(self.late),
            "dropped": dict(self.dropped),
            "dropped_by": dict(self.dropped_by),
            "buffered": dict(self.buffered),
            "buffered_peak": dict(self.buffered_peak),
            "pauses": dict(self.pauses),
            "windows_closed": dict(self.windows_closed),
            "truncated": self.truncated,
            "crash_loops": self.crash_loops,
            "broker_retries": self.broker_retries,
        }
