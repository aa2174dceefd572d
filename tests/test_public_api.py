"""The public API, pinned (like httpx's tests/test_exported_members.py): what users import
from ``packetflow``, ``packetflow.streams``, ``packetflow.actors``,
``packetflow.temporal``, ``packetflow.orchestration``, ``packetflow.web`` and
``packetflow.mcp``. A name added or
removed here is a decision, made in this file and the README together; everything else is
internal."""

from __future__ import annotations
import __future__

import types

import pytest

import packetflow
import packetflow.actors
import packetflow.mcp
import packetflow.orchestration
import packetflow.streams
import packetflow.temporal
import packetflow.web

PUBLIC = {
    packetflow: [
        "AskTimeout", "Call", "Capability", "CapabilityHierarchy", "Client", "Conditional",
        "Context", "Delivery", "Effect", "Emit", "FanOut", "Intent", "Issuer", "KeyPair",
        "KeyStore", "Parallel", "Pipeline", "Received", "Refused", "ReplayReport",
        "ReplaySelection", "Reply", "RequestRefused", "Retry", "Security", "Sequential",
        "SetAside", "TestDriver", "TokenError", "Topology",
        "TopologyError", "Worker", "call", "decode_token", "delegate_token", "emit", "fan_out",
        "issue_token", "parallel", "pipeline", "reply", "retry", "send", "sequential",
        "verify_token", "when",
    ],
    packetflow.streams: [
        "Aggregate", "Backpressure", "Count", "Hopping", "Session", "Sliding", "Table",
        "TableError", "Tumbling", "Window", "WindowResult", "agg", "block", "buffer",
        "drop_newest", "drop_oldest", "sample", "table", "throttle", "window",
    ],
    packetflow.actors: [
        "Ask", "AskTimedOut", "Decide", "Escalated", "FAILED", "Forget", "GAVE_UP", "Remind",
        "Reminder", "Router", "STOPPED", "StartTimer", "Supervise", "Supervision", "actor",
        "ask", "decide", "escalate", "forget", "remind", "restart", "resume", "router", "stop",
        "timer",
    ],
    packetflow.temporal: [
        "BAD_SCHEDULE", "Calendar", "CreateSchedule", "Interval", "ScheduleCommand", "Scheduler",
        "Timing", "UNKNOWN_SCHEDULE", "after", "at", "business_hours", "cron", "every",
        "firing_id", "relation", "resource_of", "scheduler", "within",
    ],
    packetflow.orchestration: [
        "Instance", "Saga", "SagaOutcome", "SagaTransition", "call_tool", "parallel", "saga",
        "send", "sleep", "wait_for",
    ],
    packetflow.web: ["HttpService", "Route", "WebApp", "post", "routes_of"],
    packetflow.mcp: [
        "HttpServer", "McpApp", "McpCall", "McpMount", "McpResult", "ModelProvider",
        "OfflineProvider", "Proposal", "ProposalError", "Provider", "StdioServer", "ToolHints",
        "hints_of", "mcp_call", "mcp_servers", "proposable_types", "provider_from", "serve",
        "tool_hints",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_the_public_names_are_exactly_these(module: types.ModuleType) -> None:
    assert sorted(module.__all__) == sorted(PUBLIC[module])
    for name in module.__all__:
        assert getattr(module, name) is not None, name


@pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)
def test_nothing_public_is_left_out_of_all(module: types.ModuleType) -> None:
    """Every name the face exposes without an underscore is in ``__all__`` (submodules
    aside): nothing is public by accident."""
    exposed = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }
    # agg (packetflow.streams.aggregate) is the one module a face exports, on purpose
    assert exposed == set(module.__all__) - {"agg"}

