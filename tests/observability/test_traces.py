"""Traces on every transport, with the SDK's in-memory exporter: one trace from an HTTP call
through two reactors and the intents between them, each handling a span with the intent's
own span id and the right parent, and W3C ``traceparent`` headers a standard propagator
(what opentelemetry-instrumentation-aiokafka uses on the consuming side) reads."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from support.running import new_topology, running, unique
from support.webshop import KEY, SECRET, bearer

from packetflow import Context, Intent, Security, call, issue_token
from packetflow.observability.tracing import OtelTracing
from packetflow.temporal import after, scheduler
from packetflow.web import HttpService


class Start(Intent, type_name="trace.Start", key="id", requires=["start:job/{id}"]):
    id: str


class Middle(Intent, type_name="trace.Middle", key="id", internal=True):
    id: str


class End(Intent, type_name="trace.End", key="id", internal=True):
    id: str


AUDITED: list[str] = []


def audit(job: str) -> None:
    AUDITED.append(job)


def _chain() -> Any:
    topo = new_topology("traced", security=Security(trusted_keys=[KEY], worker_secret=SECRET))
    topo.route(End, unique("ends"))

    @topo.reactor(Start, topic=unique("starts"), emits=[Middle])
    def first(intent: Start, ctx: Context) -> Middle:
        return Middle(id=intent.id)

    topo.route(Middle, unique("middles"))

    @topo.reactor(Middle, topic=topo.routes[Middle], emits=[End])
    def second(intent: Middle, ctx: Context) -> list[Any]:
        return [End(id=intent.id), call(audit, intent.id)]

    return topo


async def test_one_trace_from_an_http_call_through_two_reactors(broker: str) -> None:
    exporter = InMemorySpanExporter()
    tracing = OtelTracing.exporting(exporter, batch=False)
    topo = _chain()
    token = issue_token("tess", ["start:job/*"], key=KEY, ttl=3600)
    service = HttpService("127.0.0.1:0")
    async with running(topo, broker, services=[service], tracing=tracing) as run:
        async with httpx.AsyncClient(base_url=service.url) as http:
            sent = await http.post("/intents/trace.Start", json={"id": "j1"},
                                   headers=bearer(token))  # fmt: skip
            assert sent.status_code == 202, sent.text
        (end,) = await run.wait_for(topo.routes[End], 1)
        (middle,) = await run.read(topo.routes[Middle])
        await run.idle()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    http_span = spans["POST /intents/{type}"]
    first = spans[f"{topo.physical(topo.reactors['first'].topic)} process"]
    second = spans[f"{topo.physical(topo.reactors['second'].topic)} process"]
    assert http_span.kind is SpanKind.SERVER and http_span.parent is None
    assert first.kind is SpanKind.CONSUMER and second.kind is SpanKind.CONSUMER
    trace_id = http_span.context.trace_id
    assert first.context.trace_id == second.context.trace_id == trace_id
    assert first.parent is not None and first.parent.span_id == http_span.context.span_id
    assert second.parent is not None and second.parent.span_id == first.context.span_id
    effect = spans["call audit"]  # an effect that does more than send: its own span
    assert effect.parent is not None and effect.parent.span_id == second.context.span_id
    # the spans are PacketFlow's own ids: the contexts on the records name them
    assert middle.context is not None and end.context is not None
    assert int(middle.context.span_id, 16) == second.context.span_id
    assert int(middle.context.trace_id, 16) == trace_id
    assert int(end.context.parent_span_id or "0", 16) == second.context.span_id
    # a standard W3C propagator, as an instrumented consumer reads it: the sender's span
    carrier = {k: v.decode() for k, v in middle.record.headers if k == "traceparent"}
    remote = get_current_span(TraceContextTextMapPropagator().extract(carrier)).get_span_context()
    assert (remote.trace_id, remote.span_id) == (trace_id, first.context.span_id)
    tracing.shutdown()


class Tick(Intent, type_name="trace.Tick", key="id", requires=["tick:job/{id}"]):
    id: str


async def test_a_scheduled_firing_starts_a_trace_linked_to_the_schedules_creation() -> None:
    exporter = InMemorySpanExporter()
    tracing = OtelTracing.exporting(exporter, batch=False)
    topo = new_topology("tracedsched", security=Security(trusted_keys=[KEY], worker_secret=SECRET))
    schedules = scheduler(topo)

    @topo.reactor(Tick, topic=unique("ticks"))
    def ticks(intent: Tick, ctx: Context) -> None:
        return None

    token = issue_token("tess", ["tick:job/*", "schedule:job/*"], key=KEY, ttl=600)
    creating = Context.new(token=token)
    async with running(topo, f"memory://{unique('ts')}", tracing=tracing) as run:
        await schedules.add(run.client, Tick(id="j"), after(0.2), id="s1", context=creating)
        await run.wait_for(topo.reactors["ticks"].topic, 1)
        await run.idle()
    spans = exporter.get_finished_spans()
    (created,) = [s for s in spans if s.name.endswith(".schedules process")]
    (fired,) = [s for s in spans if s.name == f"{topo.reactors['ticks'].topic} process"]
    assert created.context.span_id == int(creating.span_id, 16)
    assert fired.parent is None and fired.context.trace_id != created.context.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in fired.links] == [
        (created.context.trace_id, created.context.span_id)
    ]
    tracing.shutdown()


@pytest.mark.kafka
async def test_an_instrumented_aiokafka_consumer_continues_the_trace(kafka_url: str) -> None:
    """opentelemetry-instrumentation-aiokafka on a plain consumer of the engine's output:
    its span is a child of the span that produced the record (a reactor's handling)."""
    exporter = InMemorySpanExporter()
    tracing = OtelTracing.exporting(exporter, batch=False)
    topo = _chain()
    token = issue_token("tess", ["start:job/*"], key=KEY, ttl=3600)
    async with running(topo, kafka_url, tracing=tracing) as run:
        await run.client.send(Start(id="j2"), context=Context.new(token=token))
        await run.wait_for(topo.routes[End], 1)
        await run.idle()
    producer = {s.name: s for s in exporter.get_finished_spans()}[
        f"{topo.physical(topo.reactors['second'].topic)} process"
    ]
    theirs = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    instrumentor = AIOKafkaInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        consumer = AIOKafkaConsumer(
            topo.physical(topo.routes[End]),
            bootstrap_servers=kafka_url.removeprefix("kafka://"),
            auto_offset_reset="earliest", group_id=unique("otel"),
        )  # fmt: skip
        await consumer.start()
        try:
            await asyncio.wait_for(consumer.getone(), 30)
        finally:
            await consumer.stop()
    finally:
        instrumentor.uninstrument()
    (received,) = [s for s in theirs.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert received.context.trace_id == producer.context.trace_id
    assert received.parent is not None and received.parent.span_id == producer.context.span_id
    tracing.shutdown()
