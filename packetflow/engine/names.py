"""Topic names: every topic a topology's engine manages, and where a namespace puts them.

A topology named ``orders`` keeps what it sets aside on ``orders.dead-letters`` and
``orders.denied``, its state on ``orders.<reactor>.changelog``, and so on. On the broker each
name (and the consumer group) gets ``$PACKETFLOW_NAMESPACE.`` in front when a namespace is
set (:meth:`TopicNames.physical`), so several copies of a topology can share one cluster.
Parts of the engine below the topology get these names, not the topology.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicNames:
    """The names of one topology's topics: logical (as declared) and physical (on the broker)."""

    topology: str
    namespace: str | None = None

    def physical(self, topic: str) -> str:
        """The broker-side name of ``topic`` (namespaced)."""
        return f"{self.namespace}.{topic}" if self.namespace else topic

    @property
    def group(self) -> str:
        """The consumer group of the topology's workers."""
        return self.physical(self.topology)

    @property
    def dead_letters(self) -> str:
        return f"{self.topology}.dead-letters"

    @property
    def denied(self) -> str:
        return f"{self.topology}.denied"

    @property
    def audit(self) -> str:
        """Issues, delegations, revocations and denials (and allowed intents, when asked)."""
        return f"{self.topology}.audit"

    @property
    def revocations(self) -> str:
        """Compacted; keys ``token:<id>`` and ``holder:<name>``; followed by every worker."""
        return f"{self.topology}.revocations"

    @property
    def late(self) -> str:
        """Records that arrived after their window closed (and its grace), with why."""
        return f"{self.topology}.late"

    @property
    def drops(self) -> str:
        """Intents a backpressure strategy dropped or sampled out, with the strategy."""
        return f"{self.topology}.drops"

    @property
    def replies(self) -> str:
        """Where replies go, keyed by requester; written only by ``reply`` effects, sealed."""
        return f"{self.topology}.replies"

    @property
    def members(self) -> str:
        """Compacted; one record per worker: what it owns, its load, where it listens."""
        return f"{self.topology}.members"

    @property
    def set_aside(self) -> tuple[str, ...]:
        """Where records are kept when they cannot go on: dead letters, denied, late, drops."""
        return (self.dead_letters, self.denied, self.late, self.drops)

    def changelog(self, owner: str, store: str | None = None) -> str:
        """The compacted topic behind a reactor's or agent's state (``store``: one of an
        agent's several stores; its main store has no name of its own)."""
        return f"{self.topology}.{owner}.{store}.changelog" if store else (
            f"{self.topology}.{owner}.changelog"
        )

    def repartition(self, owner: str) -> str:
        """The topic ``key_by`` re-keys ``owner``'s input through."""
        return f"{self.topology}.{owner}.repartition"
