"""What the changelog and the transitions topic say of a topology's saga instances (as of
the last commit), without asking a worker: what ``packetflow process list|show`` prints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from packetflow.engine.changelogs import latest_values, store_info
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Record, Transport
from packetflow.orchestration.agent import SagaSpec


def sagas_of(topology: Topology) -> list[SagaSpec]:
    """The topology's sagas, by name."""
    found = [a for a in topology.agents.values() if isinstance(a, SagaSpec)]
    if not found:
        raise LookupError(f"{topology.name} has no saga (packetflow.orchestration.saga)")
    return sorted(found, key=lambda s: s.name)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass
class InstanceView:
    """One saga instance as stored (and its transitions, when read)."""

    saga: str
    id: str
    raw: dict[str, Any]
    transitions: list[dict[str, Any]] | None = None

    @property
    def current(self) -> list[str]:
        """The steps (and compensations) in flight."""
        return [slot for slot in self.raw.get("pending", {})]

    def as_dict(self) -> dict[str, Any]:
        raw = self.raw
        authority = raw.get("authority", {})
        expires = authority.get("expires")
        history = self.transitions
        if history is None:
            history = [_event(*entry) for entry in raw.get("history", [])]
        return {
            "saga": self.saga,
            "id": self.id,
            "status": raw.get("status"),
            "start": raw.get("start", {}).get("type"),
            "data": raw.get("start", {}).get("data"),
            "by": raw.get("by"),
            "token_id": authority.get("token_id"),
            "token_expires": None if expires is None else _iso(int(expires * 1000)),
            "started": _iso(raw.get("started")),
            "updated": _iso(raw.get("updated")),
            "ended": _iso(raw.get("ended")),
            "current": self.current,
            "timers": {
                slot: _iso(entry["due"])
                for slot, entry in raw.get("pending", {}).items()
                if entry.get("due") is not None
            },
            "failure": raw.get("failure"),
            "compensated": raw.get("compensated", []),
            "compensations_failed": raw.get("undo_failed", []),
            "results": raw.get("results", {}),
            "history": history,
        }


def _event(at: int, event: str, step: str | None, reason: str | None,
           detail: str | None) -> dict[str, Any]:  # fmt: skip
    return {"at": _iso(at), "event": event, "step": step, "reason": reason, "detail": detail}


async def read_instances(
    transport: Transport, topology: Topology, saga: str | None = None
) -> list[InstanceView]:
    """Every instance the changelogs hold, of one saga or all, by saga and id."""
    out: list[InstanceView] = []
    for spec in sagas_of(topology):
        if saga is not None and spec.name != saga:
            continue
        values = await latest_values(transport, topology, store_info(topology, spec.name))
        out.extend(InstanceView(spec.name, k, v) for k, v in sorted(values.items())
                   if isinstance(v, dict))  # fmt: skip
    return out


async def read_transitions(
    transport: Transport, topology: Topology, spec: SagaSpec, instance: str
) -> list[dict[str, Any]]:
    """Every transition of ``instance`` on the saga's transitions topic, oldest first (its
    whole history, also after the instance left the store)."""
    found: list[dict[str, Any]] = []

    def take(record: Record) -> None:
        if record.key != instance.encode() or record.value is None:
            return
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            return
        if isinstance(value, dict) and value.get("saga") == spec.name:
            found.append(_event(value.get("at", 0), value.get("event", "?"), value.get("step"),
                                value.get("reason"), value.get("detail")))  # fmt: skip

    await transport.read_topic(topology.physical(spec.transitions_topic), take)
    return found
