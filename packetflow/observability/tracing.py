"""Traces with OpenTelemetry: one span per record handled, one per way in (HTTP, MCP), W3C
``traceparent`` on every record produced, so one trace runs from an HTTP call through each
reactor and the intents they emit.

The spans take PacketFlow's own ids (``engine.runtime.tracing``): the handling of an intent
is a span with the intent's span id, child of the span that sent it, so the ids a log line
or a ``pf-context`` header names are the trace's. Needs the SDK (``pip install
'packetflow[otel]'``); ``--otel`` or ``$OTEL_EXPORTER_OTLP_ENDPOINT`` turns it on, exporting
over OTLP. Off, nothing here is imported and nothing costs.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from packetflow.core.context import Context
from packetflow.engine.runtime.tracing import LINK_BAGGAGE
from packetflow.engine.transport import Record

_PRESET: ContextVar[tuple[int, int] | None] = ContextVar("packetflow_span_ids", default=None)


class PacketFlowIds(IdGenerator):
    """The SDK's span and trace ids: PacketFlow's, where a span is opened for an intent."""

    def generate_span_id(self) -> int:
        preset = _PRESET.get()
        return preset[1] if preset is not None else random.getrandbits(64)

    def generate_trace_id(self) -> int:
        preset = _PRESET.get()
        return preset[0] if preset is not None else random.getrandbits(128)


class OtelTracing:
    """The engine's :class:`~packetflow.engine.runtime.tracing.Tracing` on OpenTelemetry.
    Its provider must use :class:`PacketFlowIds` (:meth:`exporting` makes one)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("packetflow")

    @classmethod
    def exporting(cls, exporter: SpanExporter, *, batch: bool = True) -> OtelTracing:
        provider = TracerProvider(id_generator=PacketFlowIds())
        processor: SpanProcessor = (
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )
        provider.add_span_processor(processor)
        return cls(provider)

    @classmethod
    def from_environment(cls) -> OtelTracing:
        """OTLP to ``$OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter's own defaults else); with
        ``$OTEL_TRACES_EXPORTER=none``, spans made and dropped (what tracing costs a worker,
        export aside)."""
        if os.environ.get("OTEL_TRACES_EXPORTER", "otlp") == "none":
            return cls(TracerProvider(id_generator=PacketFlowIds()))
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError(
                "tracing needs the OTLP exporter: pip install 'packetflow[otel]'"
            ) from exc
        return cls.exporting(OTLPSpanExporter())

    def shutdown(self) -> None:
        self.provider.shutdown()

    @contextmanager
    def handling(self, record: Record, context: Context) -> Iterator[object]:
        parent_id = context.parent_span_id
        parent = otel_context.Context()
        if parent_id:
            remote = SpanContext(int(context.trace_id, 16), int(parent_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
            parent = trace.set_span_in_context(NonRecordingSpan(remote))
        links = []
        linked = context.baggage.get(LINK_BAGGAGE) if not parent_id else None
        if linked:  # a new trace that another one caused: a schedule's firing
            trace_hex, _, span_hex = linked.partition("-")
            with contextlib.suppress(ValueError):
                links.append(Link(SpanContext(int(trace_hex, 16), int(span_hex, 16),
                                              is_remote=True)))  # fmt: skip
        token = _PRESET.set((int(context.trace_id, 16), int(context.span_id, 16)))
        try:
            span = self.tracer.start_span(
                f"{record.topic} process", context=parent, kind=SpanKind.CONSUMER, links=links,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": record.topic,
                    "messaging.destination.partition.id": str(record.partition),
                    "messaging.kafka.offset": record.offset,
                    "messaging.message.id": context.intent_id,
                    "packetflow.principal": context.principal or "",
                },
            )  # fmt: skip
        finally:
            _PRESET.reset(token)
        with trace.use_span(span, end_on_exit=True):
            yield span

    @contextmanager
    def effect(self, name: str) -> Iterator[object]:
        with self.tracer.start_as_current_span(name, kind=SpanKind.INTERNAL) as span:
            yield span

    @contextmanager
    def entry(self, name: str, attributes: dict[str, str]) -> Iterator[tuple[str, str]]:
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER,
                                               attributes=attributes) as span:  # fmt: skip
            ids = span.get_span_context()
            yield f"{ids.trace_id:032x}", f"{ids.span_id:016x}"

