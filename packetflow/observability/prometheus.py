"""The worker's metrics in Prometheus' exposition format, read at scrape time.

A prometheus-client collector reads the engine's counters (``WorkerMetrics``) and every
substrate's registered metric (``MetricsRegistry``) when scraped: the hot path only adds
to plain numbers. Per partition lag and committed offsets are read from the consumer just
before (:meth:`EngineCollector.refresh`, awaited by the endpoint). Names follow Prometheus
conventions (``packetflow_..._total``, base units: seconds); the README's table lists them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from packetflow.engine.runtime.metrics import Histogram
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.transport import TopicPartition

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name without _total, help, WorkerMetrics field): one number each
_TOTALS = (
    ("packetflow_records_consumed", "records fetched and processed", "consumed"),
    ("packetflow_batches", "batches processed", "batches"),
    ("packetflow_commits", "offset commits (exactly-once: transactions committed)", "commits"),
    ("packetflow_transactions_aborted", "exactly-once transactions aborted", "aborted"),
    ("packetflow_records_emitted", "records the reactors' effects produced", "emitted"),
    ("packetflow_revocations_applied", "revocation records applied", "revocations"),
    ("packetflow_rebalances", "partition assignments and revocations", "rebalances"),
    ("packetflow_broker_retries", "batches retried after the broker failed them",
     "broker_retries"),
    ("packetflow_crash_loop_records", "records set aside after workers died on them",
     "crash_loops"),
    ("packetflow_set_aside_truncated", "set-aside copies truncated to fit their topic",
     "truncated"),
)  # fmt: skip
# (name without _total, help, label, WorkerMetrics counter field)
_BY = (
    ("packetflow_records_processed", "intents handled, by reactor or agent", "reactor",
     "processed"),
    ("packetflow_reactor_errors", "failures of a reactor or agent on a record", "reactor",
     "errors"),
    ("packetflow_dead_letters", "records dead-lettered, by reason", "reason", "dead_lettered"),
    ("packetflow_denials", "records denied, by reason", "reason", "denied_reasons"),
    ("packetflow_denied_intents", "records denied, by intent type", "intent_type", "denied"),
    ("packetflow_backpressure_dropped", "intents dropped by backpressure, by reactor",
     "reactor", "dropped"),
    ("packetflow_backpressure_drops", "intents dropped by backpressure, by strategy",
     "strategy", "dropped_by"),
    ("packetflow_backpressure_pauses", "times a reactor paused its input", "reactor", "pauses"),
    ("packetflow_state_restored_entries", "state entries restored from changelogs, by store",
     "store", "restored"),
)  # fmt: skip


def _buckets(h: Histogram, scale: float) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets of ``h`` (bounds times ``scale``) and the sum."""
    out, seen = [], 0
    for bound, n in zip(h.bounds, h.counts, strict=False):
        seen += n
        out.append((repr(bound * scale), float(seen)))
    out.append(("+Inf", float(h.count)))
    return out, h.total * scale


class EngineCollector(Collector):
    """Everything one worker counts, as metric families."""

    def __init__(self, view: WorkerView) -> None:
        self.view = view
        self._lag: dict[TopicPartition, int] = {}

    async def refresh(self) -> None:
        """Read what needs the consumer (lag by partition) before a scrape."""
        self._lag = await self.view.partition_lag()

    def collect(self) -> Iterable[Metric]:
        yield from self._engine()
        yield from self._partitions()
        yield from self._registry()

    def _engine(self) -> Iterator[Metric]:
        m = self.view.metrics
        for name, help_, attr in _TOTALS:
            yield CounterMetricFamily(name, help_, value=getattr(m, attr))
        consumers = {spec.name: 0 for spec in self.view.topology.consumers()}
        for name, help_, label, attr in _BY:
            family = CounterMetricFamily(name, help_, labels=[label])
            counts = dict(getattr(m, attr))
            if label == "reactor" and attr in ("processed", "errors"):
                counts = {**consumers, **counts}  # every reactor and agent, from 0
            for key, value in sorted(counts.items()):
                family.add_metric([key], value)
            yield family
        yield GaugeMetricFamily("packetflow_producer_queue",
                                "records sent, not yet acknowledged by the broker",
                                value=self.view.producer_queue())  # fmt: skip
        buffered = GaugeMetricFamily("packetflow_backpressure_buffered",
                                     "intents waiting in a backpressure buffer now",
                                     labels=["reactor"])  # fmt: skip
        for name, value in sorted(m.buffered.items()):
            buffered.add_metric([name], value)
        yield buffered
        latency = HistogramMetricFamily(
            "packetflow_processing_latency_seconds",
            "from the worker fetching a record to its handling done, by reactor or agent",
            labels=["reactor"],
        )
        for name, histogram in sorted(m.latency.items()):
            buckets, total = _buckets(histogram, 0.001)
            latency.add_metric([name], buckets, total)
        yield latency
        sizes = HistogramMetricFamily("packetflow_batch_records", "records per batch fetched")
        buckets, total = _buckets(m.batch_sizes, 1.0)
        sizes.add_metric([], buckets, total)
        yield sizes

    def _partitions(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("packetflow_consumer_lag",
                                "records not yet consumed, by partition this worker owns",
                                labels=["topic", "partition"])  # fmt: skip
        for tp, n in sorted(self._lag.items()):
            lag.add_metric([tp.topic, str(tp.partition)], n)
        yield lag
        committed = GaugeMetricFamily("packetflow_committed_offset",
                                      "the offset this worker last committed, by partition",
                                      labels=["topic", "partition"])  # fmt: skip
        for tp, offset in sorted(self.view.committed().items()):
            committed.add_metric([tp.topic, str(tp.partition)], offset)
        yield committed

    def _registry(self) -> Iterator[Metric]:
        """What substrates registered (windows, actors, schedules, the web, ...)."""
        for metric in self.view.metrics.registry.metrics.values():
            labels = sorted({k for key in metric.series for k, _ in key})
            family: Any
            if metric.kind == "counter":
                family = CounterMetricFamily(metric.name.removesuffix("_total"), metric.help,
                                             labels=labels)  # fmt: skip
            elif metric.kind == "gauge":
                family = GaugeMetricFamily(metric.name, metric.help, labels=labels)
            else:
                family = HistogramMetricFamily(metric.name, metric.help, labels=labels)
            for key, child in metric.series.items():
                values = dict(key)
                label_values = [values.get(k, "") for k in labels]
                if child.histogram is not None:
                    buckets, total = _buckets(child.histogram, 1.0)
                    family.add_metric(label_values, buckets, total)
                else:
                    family.add_metric(label_values, child.value)
            yield family


def exposition(collector: EngineCollector) -> bytes:
    """The text a scrape returns."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
