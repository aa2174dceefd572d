"""Render a topology's description (``engine/describe.py``) as text or a mermaid graph
(``packetflow topology show``)."""

from __future__ import annotations

import re
import sys

from packetflow.engine.describe import as_dict
from packetflow.engine.topology import Topology


def as_text(topology: Topology) -> str:
    d = as_dict(topology)
    guarantee = d["processing_guarantee"].replace("_", "-")
    lines = [f"topology {d['name']} (consumer group {d['group']}, {guarantee})", "", "topics:"]
    for t in d["topics"]:
        readers = ", ".join(t["reactors"]) or "-"
        lines.append(f"  {t['name']}  [{t['partitions']} partitions]  read by: {readers}")
    lines.append(f"  {d['dead_letter_topic']}  (dead letters)")
    lines.append(f"  {d['denied_topic']}  (denied intents)")
    lines.append(f"  {d['audit_topic']}  (audit trail)")
    lines.append(f"  {d['revocations_topic']}  (revoked tokens and holders, compacted)")
    lines.append(f"  {d['replies_topic']}  (replies to requests, keyed by requester)")
    lines.append(f"  {d['members_topic']}  (the workers running it, compacted)")
    if d["drops_topic"]:
        lines.append(f"  {d['drops_topic']}  (intents dropped by backpressure)")
    lines += ["", "reactors:"]
    for r in d["reactors"]:
        state = f", state {r['state']} -> {r['changelog']}" if r["stateful"] else ", stateless"
        lines.append(f"  {r['name']}  <- {r['topic']}{state}{', async' if r['async'] else ''}")
        if r["description"]:
            lines.append(f"      {r['description']}")
        lines.append(f"      consumes: {', '.join(r['consumes'])}")
        if r["emits_to"]:
            lines.append(f"      emits to: {', '.join(r['emits_to'])}")
        if r["backpressure"]:
            lines.append(f"      backpressure: {r['backpressure']}")
    if d["agents"]:
        lines += ["", "windows, tables and other agents:"]
    for a in d["agents"]:
        state = f", state -> {a['changelog']}" if a["changelog"] else ""
        lines.append(f"  {a['name']}  ({a['kind']}) <- {a['topic']}{state}")
        if a["description"]:
            lines.append(f"      {a['description']}")
        facts = {
            k: v
            for k, v in a.items()
            if k not in ("name", "kind", "topic", "consumes", "emits_to", "changelog",
                         "description")
        }  # fmt: skip
        if facts:
            lines.append("      " + ", ".join(f"{k}: {v}" for k, v in facts.items()))
        lines.append(f"      consumes: {', '.join(a['consumes'])}")
        if a["emits_to"]:
            lines.append(f"      emits to: {', '.join(a['emits_to'])}")
    lines += ["", "intent types:"]
    for i in d["intent_types"]:
        requires = ", ".join(i["requires"]) or "nothing"
        key = f", key {i['key']}" if i["key"] else ""
        lines.append(
            f"  {i['type']} v{i['version']}  -> {i['topic'] or '-'}{key}; requires {requires}"
        )
    routes = _web_routes(topology)
    if routes:
        lines += ["", "HTTP routes (packetflow worker --http):"]
        lines += [f"  POST {r['path']}  -> {r['intent']}" for r in routes]
    lines += [
        "",
        "capabilities: signed tokens"
        + (", and UNSIGNED plain capabilities (allow_unsigned)" if d["allow_unsigned"] else ""),
    ]
    if d["capability_hierarchy"]:
        lines += ["", "capability hierarchy:"]
        for op, implied in d["capability_hierarchy"].items():
            lines.append(f"  {op} => {', '.join(implied)}")
    return "\n".join(lines)


def _web_routes(topology: Topology) -> list[dict[str, str]]:
    """The routes the topology's module declared with packetflow.web (none when it never
    imported it: the web stack is not loaded for a description)."""
    routes = sys.modules.get("packetflow.web.routes")
    return [r.describe() for r in routes.routes_of(topology)] if routes is not None else []


def _node(prefix: str, name: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9_]", "_", name)


def as_mermaid(topology: Topology) -> str:
    d = as_dict(topology)
    lines = ["flowchart LR"]
    for t in d["topics"]:
        lines.append(f'  {_node("t_", t["name"])}[("{t["name"]}")]')
    for extra in (d["dead_letter_topic"], d["denied_topic"]):
        lines.append(f'  {_node("t_", extra)}[("{extra}")]')
    for r in d["reactors"]:
        rid = _node("r_", r["name"])
        shape = f'[["{r["name"]}"]]' if r["stateful"] else f'["{r["name"]}"]'
        lines.append(f"  {rid}{shape}")
        types = "<br/>".join(r["consumes"])
        lines.append(f'  {_node("t_", r["topic"])} -->|"{types}"| {rid}')
        for out in r["emits_to"]:
            lines.append(f"  {rid} --> {_node('t_', out)}")
        lines.append(f"  {rid} -.->|errors| {_node('t_', d['dead_letter_topic'])}")
    if d["late_topic"]:
        lines.append(f'  {_node("t_", d["late_topic"])}[("{d["late_topic"]}")]')
    for a in d["agents"]:
        aid = _node("a_", a["name"])
        label = f"{a['name']}<br/>{a.get('window') or a['kind']}"
        lines.append(f'  {aid}{{{{"{label}"}}}}')
        lines.append(f'  {_node("t_", a["topic"])} -->|"{"<br/>".join(a["consumes"])}"| {aid}')
        if a.get("to"):  # a repartition agent's target topic
            lines.append(f"  {aid} --> {_node('t_', topology.physical(a['to']))}")
        for out in a["emits_to"]:
            lines.append(f"  {aid} --> {_node('t_', out)}")
        if a["kind"] == "window" and d["late_topic"]:
            lines.append(f"  {aid} -.->|late| {_node('t_', d['late_topic'])}")
    return "\n".join(lines)
