"""Where one key's state lives and what reading it needs: the facts behind every way of
reading state from outside (the web's ``GET /state``, MCP's ``state://`` resources).

Reading needs ``read:`` on the key's resource: the one the consumed intent types require
for that key (``read:account/a1`` for a reactor of ``withdraw:account/{account}``), or
``observe:topology/<name>`` where they require nothing. The key's partition is found as
every producer of the topology finds it; its owner from the members topic.
"""

from __future__ import annotations

from collections.abc import Iterable

from packetflow.core.intent import Intent
from packetflow.engine.runtime.members import Member
from packetflow.engine.topology import Topology
from packetflow.engine.transport.partitioner import group_of, partition_for_key


def read_resource(topology: Topology, types: tuple[type[Intent], ...], key: str) -> str:
    """The resource ``read:`` is checked on for ``key`` of a consumer of ``types``."""
    for cls in types:
        field = cls.key_field
        for cap in cls.required_capabilities:
            if field is not None and "{" + field + "}" in cap.resource:
                return cap.resource.replace("{" + field + "}", key)
    return f"topology/{topology.name}"


def stateful(topology: Topology, name: str) -> bool:
    """``name`` is a reactor that keeps state, or an agent whose state may be read."""
    agent = topology.agents.get(name)
    if agent is not None:
        return agent.readable
    spec = topology.reactors.get(name)
    return spec is not None and spec.state is not None


def read_requirement(topology: Topology, name: str, key: str) -> tuple[str, str]:
    """What reading ``key`` of the stateful reactor or agent ``name`` requires."""
    spec = topology.reactors.get(name) or topology.agents.get(name)
    assert spec is not None
    resource = read_resource(topology, spec.intent_types, key)
    return ("observe" if resource.startswith("topology/") else "read", resource)


def partition_of(topology: Topology, name: str, key: str) -> tuple[str, int]:
    """The logical source topic of ``name`` and the partition ``key`` lands on."""
    spec = topology.reactors.get(name) or topology.agents.get(name)
    assert spec is not None
    raw = key.encode()
    separator = getattr(spec, "key_group", None)
    if separator:
        raw = group_of(raw, separator.encode())
    count = topology.topics.get(spec.topic, topology.default_partitions)
    return spec.topic, partition_for_key(raw, count)


def jsonable(value: object) -> object:
    """``orjson``'s ``default`` for what state holds: pydantic models, sets and tuples as
    JSON, anything else as its string."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def owner_of(
    members: Iterable[Member], topic: str, partition: int, *, besides: str | None = None
) -> Member | None:
    """A worker (not ``besides``) announcing ``partition`` of ``topic`` and an HTTP address."""
    return next(
        (
            m
            for m in members
            if m.instance_id != besides
            and partition in m.partitions.get(topic, [])
            and m.advertised.get("http")
        ),
        None,
    )
