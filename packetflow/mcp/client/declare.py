"""Declaring the MCP servers a topology calls (:func:`mcp_servers`), and the handler that
turns a reactor's :class:`~packetflow.engine.mcpcall.McpCall` into a call record."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from packetflow.core.effects import Emit
from packetflow.engine.agent import EffectRunner, Origin
from packetflow.engine.mcpcall import McpCall, McpResult
from packetflow.engine.topology import Topology, TopologyError
from packetflow.mcp.client.agent import CALLS, KEEP_RESULTS, McpClientSpec
from packetflow.mcp.client.calls import CALLER_BAGGAGE, Caller, McpCallRecord
from packetflow.mcp.client.servers import ServerDecl

AGENT = "mcp-client"
_IDS = uuid.UUID("0c8f3f5e-8d2a-4f7b-9a51-5b0e6d1c2a77")  # namespace of call ids


def calls_topic(topology: Topology) -> str:
    """Where a topology's MCP calls are recorded (logical)."""
    return f"{topology.name}.mcp.calls"


def mcp_servers(
    topology: Topology, *, keep_results: float = KEEP_RESULTS, **servers: ServerDecl
) -> McpClientSpec:
    """Give ``topology`` these MCP servers to call (``name=StdioServer(...)`` or
    ``HttpServer(...)``): reactors return ``mcp_call(name, tool, arguments)`` and get an
    ``McpResult`` on their own topic. Calls are recorded on ``<topology>.mcp.calls`` and
    carried out by the worker owning their partition (see ``client/agent.py``);
    ``keep_results``: seconds a result is kept for a duplicate of its call."""
    if any(isinstance(a, McpClientSpec) for a in topology.agents.values()):
        raise TopologyError(f"topology {topology.name} already has its MCP servers")
    if not servers:
        raise TopologyError("mcp_servers needs at least one server (name=StdioServer(...))")
    for name, decl in servers.items():
        if not isinstance(decl, ServerDecl):
            raise TopologyError(f"MCP server {name}: a StdioServer or HttpServer, not {decl!r}")
    spec = McpClientSpec(
        name=AGENT,
        topic=calls_topic(topology),
        intent_types=(McpCallRecord,),
        description="MCP tool calls: carried out once, results sent to their callers",
        stores=(CALLS,),
        emits=(McpResult,),
        servers=dict(servers),
        keep_results=keep_results,
    )
    topology.add_agent(spec)
    topology.register_effect(McpCall, _handler(topology, spec))
    return spec


def _handler(topology: Topology, spec: McpClientSpec) -> Any:
    async def record_call(effect: McpCall, origin: Origin, runner: EffectRunner) -> str:
        """Record ``effect`` on the calls topic; its result goes to the calling reactor's
        topic, keyed as the record it handled. Returns the call's id."""
        if effect.server not in spec.servers:
            known = ", ".join(sorted(spec.servers))
            raise ValueError(f"no MCP server {effect.server!r} is declared (known: {known})")
        caller = topology.reactors.get(origin.reactor) or topology.agents.get(origin.reactor)
        if caller is None:
            raise ValueError(f"{origin.reactor} is no reactor or agent of {topology.name}")
        if caller.topic in topology.internal_topics():
            raise ValueError(f"{origin.reactor} reads {caller.topic}, a topic the engine "
                             "manages: an MCP result cannot be sent there")  # fmt: skip
        try:
            key = None if origin.key is None else origin.key.decode()
        except UnicodeDecodeError:
            raise ValueError("an MCP call needs the calling record's key to be UTF-8") from None
        context = origin.context
        # the same record handled again (at least once) makes the same call: one call (the
        # span tells a result, which is its calling intent's again, from that intent)
        arguments = orjson.dumps(dict(effect.arguments), option=orjson.OPT_SORT_KEYS)
        call_id = uuid.uuid5(_IDS, "\0".join((
            context.intent_id, context.span_id, origin.reactor, effect.server, effect.tool,
            arguments.decode(),
        ))).hex  # fmt: skip
        where = Caller.at(caller.topic, key, effect.server, effect.tool, context)
        call_context = context.inherit(origin.reactor).model_copy(update={
            # the engine's Refused of this record (denied, say) comes to the agent
            "reply_to": topology.physical(spec.topic),
            "requester": call_id,
            "deadline": None,  # the call's timeout bounds it; its result always comes
            "baggage": {**context.baggage, CALLER_BAGGAGE: where.encode()},
        })  # fmt: skip
        record = McpCallRecord(
            call_id=call_id, server=effect.server, tool=effect.tool,
            arguments=dict(effect.arguments), timeout=effect.timeout,
        )  # fmt: skip
        emit = Emit(record, spec.topic, call_id, call_context)
        await runner.run_effects([emit], Origin(origin.reactor, call_context, origin.key))
        return call_id

    return record_call
