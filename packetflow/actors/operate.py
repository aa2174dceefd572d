"""Operating actors: what an operator sees of them and the one command they take.

:func:`read_actors` reads an actor type's changelogs (state, supervision, asks, reminders)
from the broker and says, per actor, its state and status as of the last commit, without
asking a worker. :class:`ActorControl` is an operator's command to one actor (``start``: a
stopped actor takes messages again); it requires ``operate:actor/<type>/<id>`` like any
intent's capability, and every actor type takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from packetflow.core.intent import Intent
from packetflow.engine.changelogs import latest_values
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Transport


class ActorControl(
    Intent,
    type_name="packetflow.actors.Control",
    key="actor",
    requires=["operate:actor/{actor_type}/{actor}"],
):
    """An operator's command to one actor: ``start`` (a stopped actor goes on)."""

    actor_type: str
    actor: str
    command: Literal["start"] = "start"


@dataclass
class ActorView:
    """One actor as its changelogs say, as of the last commit."""

    actor_type: str
    actor: str
    state: Any = None
    status: str = "active"  # active, backing off, escalated (to its supervisor), stopped
    reason: str | None = None  # why it stopped
    restarts: int = 0  # restarts within its supervision window
    waiting: int = 0  # messages in its stash (backing off)
    asks: list[str] = field(default_factory=list)  # request types of its pending asks
    reminders: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        state = self.state
        if hasattr(state, "model_dump"):
            state = state.model_dump(mode="json")
        return {
            "type": self.actor_type,
            "id": self.actor,
            "status": self.status,
            "reason": self.reason,
            "restarts": self.restarts,
            "waiting": self.waiting,
            "asks": self.asks,
            "reminders": self.reminders,
            "state": state,
        }


def actor_types(topology: Topology) -> list[str]:
    return [name for name, spec in topology.agents.items() if spec.kind == "actor"]


async def read_actors(
    transport: Transport, topology: Topology, actor_type: str | None = None
) -> list[ActorView]:
    """Every actor of ``actor_type`` (default: of every actor type) the changelogs know,
    by type and id."""
    types = actor_types(topology)
    if actor_type is not None:
        if actor_type not in types:
            known = ", ".join(types) or "none"
            raise LookupError(
                f"{topology.name} has no actor type {actor_type!r} (actor types: {known})"
            )
        types = [actor_type]
    views: dict[tuple[str, str], ActorView] = {}
    for info in topology.stores():
        if info.owner not in types or info.name == "timers":
            continue
        values = await latest_values(transport, topology, info)
        for key, value in values.items():
            view = views.setdefault((info.owner, key), ActorView(info.owner, key))
            fold(view, info.name, value)
    return [views[k] for k in sorted(views) if views[k].state is not None or _busy(views[k])]


def _busy(view: ActorView) -> bool:
    return view.status != "active" or bool(view.asks or view.reminders)


def fold(view: ActorView, store: str, value: Any) -> None:
    """Put what one of an actor's stores holds for it into ``view``."""
    if store == "":
        view.state = value
    elif store == "supervision":
        if value.get("stopped"):
            view.status, view.reason = "stopped", value["stopped"]
        elif value.get("escalated"):
            view.status, view.reason = "escalated", value["escalated"]
            view.waiting = len(value.get("stash", []))
        elif "stash" in value:
            view.status, view.waiting = "backing off", len(value["stash"])
        view.restarts = len(value.get("restarts", []))
    elif store == "asks":
        view.asks = [e["request"] for e in value.values() if not e.get("expired")]
    elif store == "reminders":
        view.reminders = {
            name: {
                "due": datetime.fromtimestamp(e["due"] / 1000, UTC).isoformat(),
                "every": None if e["every"] is None else e["every"] / 1000,
                "misfire": e["misfire"],
            }
            for name, e in value.items()
        }
