"""A store's values as its changelog says, read from the broker without asking a worker
(as of the last commit): what ``packetflow actors`` and ``packetflow schedule`` show."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from packetflow.engine.topology import StoreInfo, Topology
from packetflow.engine.transport import Record, Transport


async def latest_values(
    transport: Transport, topology: Topology, info: StoreInfo
) -> dict[str, Any]:
    """The last value per key (as text) of a store's changelog (a compacted topic: what it
    keeps); values that do not decode (no worker wrote them) are left out."""
    values: dict[str, Any] = {}
    decode: Callable[[bytes], Any] = info.spec.decode

    def take(record: Record) -> None:
        key = (record.key or b"").decode(errors="replace")
        if record.value is None:
            values.pop(key, None)
            return
        try:
            values[key] = decode(record.value)
        except Exception:
            values.pop(key, None)

    await transport.read_topic(topology.physical(info.changelog), take)
    return values


def store_info(topology: Topology, owner: str, name: str = "") -> StoreInfo:
    """The store ``name`` of reactor or agent ``owner``."""
    for info in topology.stores():
        if info.owner == owner and info.name == name:
            return info
    raise LookupError(f"{topology.name} has no store {name!r} of {owner!r}")
