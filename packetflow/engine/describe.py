"""A topology as plain data: what ``packetflow topology show`` prints, and what the web's
and MCP's descriptions of a topology are made from (renderers live with their interface:
``cli/render.py``)."""

from __future__ import annotations

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
                "public": spec.public,
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
        "replies_topic": topology.physical(topology.replies_topic),
        "members_topic": topology.physical(topology.members_topic),
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
