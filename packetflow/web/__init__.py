"""The web interface: a worker's HTTP server (intents in, state and live feeds out, the
dashboard, health, OpenAPI) and the routes a topology module declares.

Lives in the interfaces layer: imports the engine (the worker view, the guard through it,
the client) and observability (its endpoints, the in-loop server), nothing above it.
``packetflow worker MODULE --http 127.0.0.1:8080`` or
``Worker(topology, services=[HttpService("127.0.0.1:8080")])`` serves it; ``mounts=`` adds
routes another interface makes (the CLI mounts MCP's ``/mcp``: neither imports the other).
"""

from packetflow.web.app import WebApp
from packetflow.web.routes import Route, post, routes_of
from packetflow.web.service import HttpService

__all__ = ["HttpService", "Route", "WebApp", "post", "routes_of"]
