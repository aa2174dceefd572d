"""Render a topology as text, a mermaid graph or JSON (``packetflow topology show``)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from packetflow.engine.topology import Topology


def as_dict(topology: Topology) -> dict[str, Any]:
    """The topology as plain data: topics, reactors, intent types, capabilities."""
    return {
        "name": topology.name,
        "group": topology.group_id,
        "topics": [
            {
                "name": topology.physical(i.name),
                "partitions": i.partitions,
                "reactors": i.reactors,
                "intent_types": i.intent_types,
            }
            for i in topology.topic_infos()
        ],
        "reactors": [
            {
                "name": spec.name,
                "topic": topology.physical(spec.topic),
                "consumes": [t.intent_type for t in spec.intent_types],
                "emits_to": [topology.physical(t) for t in topology.emits(spec.name)],
                "stateful": spec.stateful,
                "state": spec.state.type_name if spec.state else None,
                "async": spec.is_async,
                "changelog": topology.physical(topology.changelog_topic(spec.name))
                if spec.stateful
                else None,
                "description": spec.description,
                "backpressure": str(spec.backpressure) if spec.backpressure else None,
            }
            for spec in topology.reactors.values()
        ],
        "agents": [
            {
                "name": agent.name,
                "kind": agent.kind,
                "topic": topology.physical(agent.topic),
                "consumes": [t.intent_type for t in agent.intent_types],
                "emits_to": [topology.physical(t) for t in topology.emits(agent.name)],
                "changelog": topology.physical(topology.changelog_topic(agent.name))
                if agent.state is not None
                else None,
                "description": agent.description,
                **agent.describe(),
            }
            for agent in topology.agents.values()
        ],
        "intent_types": [
            {
                "type": name,
                "class": cls.__name__,
                "version": cls.intent_version,
                "key": cls.key_field,
                "requires": [str(c) for c in cls.required_capabilities],
                "topic": topology.physical(topology.routes[cls])
                if cls in topology.routes
                else None,
            }
            for name, cls in sorted(topology.intent_types.items())
        ],
        "capability_hierarchy": topology.hierarchy.as_dict(),
        "dead_letter_topic": topology.physical(topology.dead_letter_topic),
        "denied_topic": topology.physical(topology.denied_topic),
        "audit_topic": topology.physical(topology.audit_topic),
        "revocations_topic": topology.physical(topology.revocations_topic),
        "late_topic": topology.physical(topology.late_topic)
        if topology.late_topic in topology.topics
        else None,
        "drops_topic": topology.physical(topology.drops_topic)
        if any(r.backpressure for r in topology.reactors.values())
        else None,
        "allow_unsigned": topology.security.allow_unsigned,
        "processing_guarantee": topology.processing_guarantee,
    }


def as_json(topology: Topology) -> str:
    return orjson.dumps(as_dict(topology), option=orjson.OPT_INDENT_2).decode()


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
