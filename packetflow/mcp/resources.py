"""What an MCP client may read: the topology's description, one key's state from the
worker that owns it (``state://{name}/{key}``: a reactor's state, an agent's: a window's
open windows, an actor's, a schedule's), and the records set aside lately (dead letters,
denials). Each read is checked like a request: ``read:`` on the key's resource (see
``engine.runtime.lookup``), ``observe:topology/<name>`` for the rest.

Set-aside records are shown by their reason, type, key and time, never with their headers
(a record's token travels in one).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from packetflow.engine.client import Client, Received
from packetflow.engine.runtime.lookup import stateful
from packetflow.engine.topology import Topology
from packetflow.engine.transport import StartAt

RECENT = 50  # set-aside records a resource shows, the latest
WINDOW_S = 3600.0  # how far back "lately" reaches


class ResourceError(ValueError):
    """A URI that names nothing here (one line, for the client)."""


def observe(topology: Topology) -> tuple[str, str]:
    """What reading the description and the set-aside records requires."""
    return ("observe", f"topology/{topology.name}")


def fixed_uris(topology: Topology) -> dict[str, tuple[str, str]]:
    """URI -> (name, description) of the resources that are not templates."""
    name = topology.name
    return {
        f"topology://{name}": (
            "topology",
            f"The topology {name}: topics, reactors, agents, intent types and what each requires",
        ),
        f"deadletters://{name}": (
            "dead letters",
            f"The latest {RECENT} records set aside as "
            "dead letters in the last hour, with their reasons",
        ),
        f"denials://{name}": (
            "denials",
            f"The latest {RECENT} records denied in the last "
            "hour, with the capabilities they lacked",
        ),
    }


def state_names(topology: Topology) -> list[str]:
    """The reactors and agents whose state may be read by key."""
    names = [*topology.reactors, *topology.agents]
    return sorted(n for n in names if stateful(topology, n))


def parse_state_uri(topology: Topology, uri: str) -> tuple[str, str]:
    """``state://name/key`` -> (name, key); the key may hold slashes."""
    rest = uri.removeprefix("state://")
    name, _, key = rest.partition("/")
    if not key:
        raise ResourceError(f"{uri}: give state://<reactor or agent>/<key>")
    if not stateful(topology, name):
        raise ResourceError(f"{name!r} is not a stateful reactor or agent of {topology.name}")
    return name, key


async def set_aside(
    client: Client, kind: str, *, since_s: float = WINDOW_S
) -> list[dict[str, Any]]:
    """The records set aside as ``kind`` (``dead-letters``, ``denied``) since then, oldest
    first, as plain facts."""
    topic = client.set_aside_topic(kind)
    start = StartAt(time_ms=int((time.time() - since_s) * 1000))
    return [fact(item) async for item in client.tail(topic, start=start)]


def fact(item: Received) -> dict[str, Any]:
    """One set-aside record without its headers (a token travels in one)."""
    record, why = item.record, item.set_aside
    out: dict[str, Any] = {
        "time": record.timestamp / 1000,
        "type": item.header("pf-type"),
        "key": None if record.key is None else record.key.decode(errors="replace"),
        "reason": why.reason if why else None,
        "error": why.error if why else None,
        "reactor": why.reactor if why else None,
        "missing": list(why.missing) if why else [],
        "source": why.source if why else None,
    }
    if item.context is not None:
        out["principal"] = item.context.principal
        out["intent_id"] = item.context.intent_id
    if item.intent is not None:
        out["intent"] = item.intent.model_dump(mode="json")
    return out


def summary(facts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by reason and by type, and the latest records."""
    return {
        "count": len(facts),
        "by_reason": dict(Counter(f["reason"] for f in facts).most_common()),
        "by_type": dict(Counter(f["type"] for f in facts).most_common()),
        "latest": facts[-RECENT:],
    }
