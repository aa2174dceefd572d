"""The durable MCP client effect: reactors call MCP tools with ``mcp_call(...)`` and get an
``McpResult`` back on their topic, once, whatever worker crashes in between (``agent.py``
says how). ``servers.py`` declares servers and holds the sessions, ``calls.py`` the call
record and one call's execution, ``agent.py`` the agent, ``declare.py`` :func:`mcp_servers`.
"""

from packetflow.engine.mcpcall import McpCall, McpResult, mcp_call
from packetflow.mcp.client.agent import McpClientSpec
from packetflow.mcp.client.calls import McpCallRecord
from packetflow.mcp.client.declare import calls_topic, mcp_servers
from packetflow.mcp.client.servers import HttpServer, ServerDecl, StdioServer

__all__ = [
    "HttpServer",
    "McpCall",
    "McpCallRecord",
    "McpClientSpec",
    "McpResult",
    "ServerDecl",
    "StdioServer",
    "calls_topic",
    "mcp_call",
    "mcp_servers",
]
