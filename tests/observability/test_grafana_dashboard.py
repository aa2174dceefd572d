"""The Grafana dashboard in ``deploy/`` queries only metrics a worker really exports: every
metric name in every panel's query is a family in a scrape of a running worker."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from support.webshop import KEY, Order, bearer, served

from packetflow import Context, issue_token

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "packetflow.json"
METRIC = re.compile(r"\b(packetflow_[a-z_]+)\b")


def _family(name: str) -> str:
    """The family a sample name belongs to (``_bucket``/``_count``/``_sum``/``_total``)."""
    return re.sub(r"_(bucket|count|sum|total)$", "", name)


async def test_every_metric_a_panel_queries_is_exported(broker: str) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = {m for p in panels for t in p["targets"] for m in METRIC.findall(t["expr"])}
    assert len(queried) >= 12
    alice = issue_token("alice", ["order:customer/alice", "read:customer/*"], key=KEY, ttl=600)
    async with served(broker) as s:
        topic = s.run.topology.reactors["orders"].topic
        async with s.http.stream("GET", f"/live/{topic}", headers=bearer(alice)):
            await s.http.post("/intents/shop.Order", headers=bearer(alice),
                              json={"customer": "alice", "item": "tea"})  # fmt: skip
            await s.run.client.send(Order(customer="bob", item="x"),
                                    context=Context.new(token=alice))  # fmt: skip
            await s.run.denied(1)
            await asyncio.sleep(0.1)
            scrape = (await s.http.get("/metrics")).text
    exported = {_family(f.name) for f in text_string_to_metric_families(scrape)}
    missing = sorted(m for m in queried if _family(m) not in exported)
    assert not missing, f"panels query metrics no worker exports: {missing}"
