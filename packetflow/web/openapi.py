"""The OpenAPI document of a worker's HTTP server, made from the intent models: one
``POST /intents/<type>`` per intent type accepted from outside, the declared routes, state
queries, live feeds and health."""

from __future__ import annotations

import re
from typing import Any

from pydantic.json_schema import models_json_schema

from packetflow.core.intent import Intent
from packetflow.engine.topology import Topology
from packetflow.web.routes import routes_of

REF = "#/components/schemas/{model}"


def accepted(topology: Topology) -> list[type[Intent]]:
    """Intent types a request may publish: those the topology consumes or routes that are
    not internal, by wire name."""
    types = topology.intent_types
    return [types[n] for n in sorted(types) if not types[n].internal]


def _responses(wait: bool) -> dict[str, Any]:
    refusal = {"$ref": "#/components/schemas/Refusal"}
    json = {"application/json": {"schema": refusal}}
    out: dict[str, Any] = {
        "202": {"description": "published", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Published"}}}},
        "400": {"description": "the body is not the intent's (pydantic's errors)",
                "content": json},
        "401": {"description": "no token, or one that does not hold", "content": json},
        "403": {"description": "the token does not cover what the intent requires",
                "content": json},
        "413": {"description": "the body is larger than a record may be", "content": json},
    }  # fmt: skip
    if wait:
        out["200"] = {"description": "the reply (with ?wait=)", "content": {
            "application/json": {"schema": {"type": "object"}}}}  # fmt: skip
        out["422"] = {"description": "the worker dead-lettered it (with ?wait=)", "content": json}
        out["504"] = {"description": "no reply within ?wait=", "content": json}
    return out


def document(topology: Topology, *, title: str | None = None) -> dict[str, Any]:
    types = accepted(topology)
    refs, schemas = models_json_schema([(t, "validation") for t in types], ref_template=REF)
    components: dict[str, Any] = dict(schemas.get("$defs", {}))
    components["Refusal"] = {
        "type": "object",
        "required": ["reason", "error"],
        "properties": {
            "reason": {"type": "string", "description": "as the denied topic's pf-reason"},
            "error": {"type": "string"},
            "missing": {"type": "array", "items": {"type": "string"}},
        },
    }
    components["Published"] = {
        "type": "object",
        "properties": {
            "intent_id": {"type": "string"}, "topic": {"type": "string"},
            "partition": {"type": "integer"}, "offset": {"type": "integer"},
        },
    }  # fmt: skip
    wait = {
        "name": "wait", "in": "query", "required": False,
        "description": "wait this long for the reply (e.g. 5s, 500ms)",
        "schema": {"type": "string"},
    }  # fmt: skip
    paths: dict[str, Any] = {}
    for cls in types:
        needs = [f"{op}:{res}" for op, res in ((c.operation, c.resource)
                 for c in cls.required_capabilities)]  # fmt: skip
        paths[f"/intents/{cls.intent_type}"] = {"post": {
            "operationId": f"send_{cls.intent_type.replace('.', '_')}",
            "summary": (cls.__doc__ or cls.__name__).strip().split("\n")[0],
            "description": "Requires " + (", ".join(needs) if needs else "nothing"),
            "parameters": [wait],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": refs[(cls, "validation")]}}},
            "responses": _responses(True),
            "security": [{"bearer": []}] if needs else [],
        }}  # fmt: skip
    for route in routes_of(topology):
        cls = route.intent_type
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in route.params
        ]
        paths[route.path] = {"post": {
            "operationId": "route" + re.sub(r"[^A-Za-z0-9]+", "_", route.path).rstrip("_"),
            "summary": route.summary or cls.__name__,
            "parameters": [*params, wait],
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": refs.get((cls, "validation"), {"type": "object"})}}},
            "responses": _responses(True),
            "security": [{"bearer": []}],
        }}  # fmt: skip
    paths["/state/{name}/{key}"] = {"get": {
        "operationId": "state",
        "summary": "A reactor's or agent's state for a key, from the worker that owns it",
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "responses": {"200": {"description": "the value and the offset it reflects"},
                      "503": {"description": "being restored, or no known owner (Retry-After)"}},
        "security": [{"bearer": []}],
    }}  # fmt: skip
    paths["/live/{topic}"] = {"get": {
        "operationId": "live",
        "summary": "The topic's records as Server-Sent Events (resume with Last-Event-ID)",
        "parameters": [{"name": "topic", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "text/event-stream"}},
        "security": [{"bearer": []}],
    }}  # fmt: skip
    for name in ("live", "ready"):
        paths[f"/health/{name}"] = {"get": {
            "operationId": f"health_{name}", "summary": f"{name}ness",
            "responses": {"200": {"description": name}, "503": {"description": "not " + name}},
        }}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": title or f"PacketFlow {topology.name}", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a PacketFlow capability token"}},
        },
    }
