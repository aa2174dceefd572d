"""Routes a topology module declares for its intents: ``web.post(topology, "/orders/{customer}",
PlaceOrder)``. Path and query parameters fill fields, the JSON body the rest. Kept here, by
topology: the engine's :class:`~packetflow.engine.topology.Topology` knows nothing of HTTP."""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

from packetflow.core.intent import Intent
from packetflow.engine.topology import Topology, TopologyError

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")
_ROUTES: weakref.WeakKeyDictionary[Topology, list[Route]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Route:
    """``POST path`` publishes ``intent_type``; ``{name}`` in the path fills field ``name``."""

    path: str
    intent_type: type[Intent]
    summary: str = ""

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def describe(self) -> dict[str, str]:
        return {"method": "POST", "path": self.path, "intent": self.intent_type.intent_type}


def post(topology: Topology, path: str, intent_type: type[Intent], *, summary: str = "") -> Route:
    """Declare ``POST path`` on the worker's HTTP server for ``intent_type``, which the
    topology must consume or route; each ``{param}`` names a field of the intent."""
    if not path.startswith("/"):
        raise TopologyError(f"route {path!r}: a path starts with /")
    if path.split("/")[1] in RESERVED:
        raise TopologyError(f"route {path!r}: /{path.split('/')[1]} is the engine's")
    if intent_type.intent_type not in topology.intent_types:
        raise TopologyError(
            f"route {path}: {intent_type.intent_type} is not an intent type of {topology.name}"
        )
    if intent_type.internal:
        raise TopologyError(f"route {path}: {intent_type.intent_type} is internal")
    route = Route(path, intent_type, summary or (intent_type.__doc__ or "").strip().split("\n")[0])
    for name in route.params:
        if name not in intent_type.model_fields:
            raise TopologyError(
                f"route {path}: {{{name}}} is not a field of {intent_type.__name__}"
            )
    routes = _ROUTES.setdefault(topology, [])
    if any(r.path == path for r in routes):
        raise TopologyError(f"route {path} is declared twice")
    routes.append(route)
    return route


def routes_of(topology: Topology) -> list[Route]:
    """The routes declared for ``topology`` (in declaration order)."""
    return list(_ROUTES.get(topology, []))


# the paths the engine serves itself
RESERVED = frozenset(
    {"intents", "state", "live", "health", "openapi.json", "login", "logout", "dashboard",
     "static", "metrics", "mcp"}
)  # fmt: skip
