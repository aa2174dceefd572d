"""``/metrics`` scraped from a running worker on every transport after a known workload: the
exact counts by reactor and reason, in an exposition prometheus-client's own parser reads;
the same from ``--metrics`` without ``--http``; and JSON log lines that lead to a record."""

from __future__ import annotations

import io
import logging

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from support.running import running
from support.webshop import KEY, Order, bearer, served, shop

from packetflow import Context, TestDriver, issue_token
from packetflow.observability import JsonFormatter, MetricsService

ALICE = issue_token("alice", ["order:customer/alice"], key=KEY, ttl=3600)
BOB = issue_token("bob", ["order:customer/bob"], key=KEY, ttl=3600)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_scrape_counts_the_workload_exactly(broker: str) -> None:
    async with served(broker) as s:
        for item in ("tea", "cake", "jam"):
            ok = await s.http.post("/intents/shop.Order", headers=bearer(ALICE),
                                   json={"customer": "alice", "item": item})  # fmt: skip
            assert ok.status_code == 202
        client = s.run.client
        await client.send(Order(customer="alice", item="x"), context=Context.new(token=BOB))
        await client.send(Order(customer="alice", item="y", qty=0),
                          context=Context.new(token=ALICE))  # fmt: skip
        await s.run.denied(1)
        await s.run.dead_letters(1)
        await s.run.idle()
        response = await s.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        got = samples(response.text)
    assert got[("packetflow_records_processed_total", (("reactor", "orders"),))] == 3
    assert got[("packetflow_records_processed_total", (("reactor", "jobs"),))] == 0
    assert got[("packetflow_reactor_errors_total", (("reactor", "orders"),))] == 1
    assert got[("packetflow_denials_total", (("reason", "insufficient"),))] == 1
    assert got[("packetflow_dead_letters_total", (("reason", "reactor-error"),))] == 1
    assert got[("packetflow_denied_intents_total", (("intent_type", "shop.Order"),))] == 1
    assert got[("packetflow_records_consumed_total", ())] == 5
    latency = ("packetflow_processing_latency_seconds_count", (("reactor", "orders"),))
    assert got[latency] >= 4  # every record the reactor took, failed one included
    assert any(name == "packetflow_consumer_lag" for name, _ in got)
    assert got[("packetflow_producer_queue", ())] == 0  # all acknowledged once idle
    http = ("packetflow_http_requests_total", (("route", "/intents/{type}"), ("status", "202")))
    assert got[http] == 3


async def test_metrics_without_http(broker: str) -> None:
    service = MetricsService("127.0.0.1:0")
    async with running(shop(), broker, services=[service]) as run:
        await run.client.send(Order(customer="alice", item="tea"),
                              context=Context.new(token=ALICE))  # fmt: skip
        await run.wait_for(run.topology.reactors["orders"].topic, 1)
        await run.idle()
        async with httpx.AsyncClient(base_url=service.url) as http:
            text = (await http.get("/metrics")).text
            ready = await http.get("/health/ready")
    assert samples(text)[("packetflow_records_processed_total", (("reactor", "orders"),))] == 1
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_json_log_lines_lead_to_the_record_and_its_trace() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("packetflow.worker")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        topology = shop()
        with TestDriver(topology) as driver:
            context = Context.new(token=driver.issue("alice", ["order:customer/alice"]))
            driver.send(Order(customer="alice", item="y", qty=0), context=context)
            (dead,) = driver.dead_letters()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    (line,) = [x for x in lines if x["message"].startswith("dead-lettered")]
    assert line["level"] == "INFO" and line["logger"] == "packetflow.worker"
    assert line["intent_id"] == context.intent_id and line["trace_id"] == context.trace_id
    assert dead.set_aside is not None
    assert f"{line['topic']}/{line['partition']}/{line['offset']}" == dead.set_aside.source
    assert line["reason"] == "reactor-error" and line["reactor"] == "orders"
