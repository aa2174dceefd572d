"""Routers: a named pool of actor ids in front of an actor type, picking who gets a message.

``pool = router(topology, "pickers", "picker", members=["p1", "p2", "p3"], by="round_robin")``
then ``return state, pool.tell(intent)`` from a reactor or actor (an emit to the chosen
member, keyed by its id), or ``client.send(intent, **pool.address(intent))`` from outside.
Strategies: ``key_hash`` (default: the intent's key, so one key always reaches the same
member), ``round_robin``, ``random`` (seeded: the same picks run after run), ``weighted``
(random by ``weights``), ``capability`` (only members whose declared capabilities cover the
intent's requirements; the first that does, rotating), ``least_loaded`` (members on the
workers with the least load, as the workers announce it on the members topic: records not
yet consumed plus those buffered; rotating among equals, and round robin where no load is
known, from a client, say), ``broadcast`` (every member). Round robin and rotation count
per process; they need no state on the broker.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from packetflow.core.capability import Capability, CapabilityHierarchy
from packetflow.core.effects import Emit
from packetflow.core.intent import Intent
from packetflow.engine.agent import WorkerLoad, current_members
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.transport.partitioner import group_of, partition_for_key

Strategy = Literal[
    "key_hash", "round_robin", "random", "weighted", "capability", "least_loaded", "broadcast"
]
STRATEGIES = (
    "key_hash", "round_robin", "random", "weighted", "capability", "least_loaded", "broadcast"
)


@dataclass
class Router:
    """A pool of ids of one actor type and how a message picks among them."""

    name: str
    actor_type: str
    topic: str  # the actor type's (logical)
    members: tuple[str, ...]
    by: Strategy = "key_hash"
    weights: tuple[float, ...] = ()
    capabilities: Mapping[str, tuple[Capability, ...]] = field(default_factory=dict)
    hierarchy: CapabilityHierarchy = field(default_factory=CapabilityHierarchy)
    seed: int = 0
    partitions: int = 1  # of the actor type's topic
    key_group: str | None = None  # the actor type's (its records go by their group)
    _turn: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def pick(self, intent: Intent) -> list[str]:
        """The member ids ``intent`` goes to (one, or every one for ``broadcast``)."""
        members = self.members
        if self.by == "broadcast":
            return list(members)
        if self.by == "key_hash":
            key = intent.partition_key() or ""
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            return [members[int.from_bytes(digest, "big") % len(members)]]
        if self.by == "random":
            return [self._rng.choice(members)]
        if self.by == "weighted":
            return self._rng.choices(members, weights=self.weights)
        if self.by == "capability":
            able = [m for m in members if self._covers(m, intent)]
            if not able:
                raise LookupError(
                    f"router {self.name}: no member may take {type(intent).intent_type} "
                    f"(it requires {', '.join(f'{o}:{r}' for o, r in intent.requirements())})"
                )
            members = tuple(able)
        if self.by == "least_loaded":
            members = self._least_loaded(current_members.get(lambda: ())())
        chosen = members[self._turn % len(members)]
        self._turn += 1
        return [chosen]

    def _least_loaded(self, workers: Sequence[WorkerLoad]) -> tuple[str, ...]:
        """The members whose partitions' workers announced the least load (all of them
        when no worker's load is known)."""
        owners = {
            p: w.lag + w.buffered for w in workers for p in w.partitions.get(self.topic, ())
        }
        if not owners:
            return self.members
        sep = self.key_group.encode() if self.key_group else None
        loads = {}
        for member in self.members:
            raw = member.encode()
            p = partition_for_key(group_of(raw, sep) if sep else raw, self.partitions)
            loads[member] = owners.get(p)
        known = [load for load in loads.values() if load is not None]
        if not known:
            return self.members
        least = min(known)
        return tuple(m for m, load in loads.items() if load == least)

    def _covers(self, member: str, intent: Intent) -> bool:
        held = self.capabilities.get(member, ())
        return not self.hierarchy.compile(held).missing(intent.requirements())

    def tell(self, intent: Intent) -> Emit | list[Emit]:
        """The effect sending ``intent`` to the picked member(s) (keyed by their ids)."""
        emits = [Emit(intent, self.topic, member) for member in self.pick(intent)]
        return emits if self.by == "broadcast" else emits[0]

    def address(self, intent: Intent) -> dict[str, Any]:
        """``topic`` and ``key`` for ``Client.send`` of ``intent`` to one picked member."""
        if self.by == "broadcast":
            raise ValueError(f"router {self.name} broadcasts: send to each of .members")
        return {"topic": self.topic, "key": self.pick(intent)[0]}


def router(
    topology: Topology,
    name: str,
    actor_type: str,
    *,
    members: Sequence[str],
    by: Strategy = "key_hash",
    weights: Sequence[float] = (),
    capabilities: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> Router:
    """A router over ``members`` (ids of ``actor_type``, declared before it) named ``name``;
    ``capabilities`` (``capability`` routing): what each member may take, as
    ``"operation:resource"`` strings; ``seed``: the random strategies' seed."""
    spec = topology.agents.get(actor_type)
    if spec is None or spec.kind != "actor":
        raise TopologyError(
            f"router {name}: {actor_type!r} is not an actor type declared before it"
        )
    if by not in STRATEGIES:
        raise TopologyError(f"router {name}: by must be one of {', '.join(STRATEGIES)}")
    if not members:
        raise TopologyError(f"router {name}: no members")
    if by == "weighted" and (len(weights) != len(members) or min(weights) < 0 or not sum(weights)):
        raise TopologyError(f"router {name}: one weight >= 0 per member, not all 0")
    held = {
        m: tuple(Capability.parse(c) for c in (capabilities or {}).get(m, ())) for m in members
    }
    if by == "capability" and not capabilities:
        raise TopologyError(f"router {name}: capability routing needs each member's capabilities")
    return Router(
        name, actor_type, spec.topic, tuple(members), by, tuple(weights), held,
        topology.hierarchy, seed, topology.topics[spec.topic], spec.key_group,
    )  # fmt: skip
