"""The MCP interface (Model Context Protocol, the official ``mcp`` 2.x SDK): a topology's
intents as tools for AI agents (every call checked against the caller's capability token),
its state, description and set-aside records as resources, prompts; MCP tools called from
reactors as a durable effect (``client/``); text turned into proposed intents through a
pluggable provider (``proposals/``).

Lives in the interfaces layer: imports the engine and observability, never ``web`` (the
CLI mounts the MCP app into a worker's HTTP server) nor anything above it.
"""

from packetflow.engine.mcpcall import McpCall, McpResult, mcp_call
from packetflow.mcp.client import HttpServer, StdioServer, mcp_servers
from packetflow.mcp.hints import ToolHints, hints_of, tool_hints
from packetflow.mcp.proposals import (
    ModelProvider,
    OfflineProvider,
    Proposal,
    ProposalError,
    Provider,
    proposable_types,
    provider_from,
)
from packetflow.mcp.server import McpApp
from packetflow.mcp.service import McpMount, serve

__all__ = [
    "HttpServer", "McpApp", "McpCall", "McpMount", "McpResult", "ModelProvider",
    "OfflineProvider", "Proposal", "ProposalError", "Provider", "StdioServer", "ToolHints",
    "hints_of", "mcp_call", "mcp_servers", "proposable_types", "provider_from", "serve",
    "tool_hints",
]  # fmt: skip
