"""Tables: the latest intent per key of a topic, for reactors to join their stream against.

``limits = table(topology, LimitSet)`` reads topic ``limits`` (by default the table's name)
and keeps, per record key, the newest ``LimitSet`` that passed the capability check. A
reactor reads it with ``limits.get(account)``.

- **partitioned** (default): each worker holds the rows of the table partitions it owns, and
  the consumer group gives a worker the same partition numbers of every topic, so a stream
  keyed like the table (same key, same partition count) finds its rows locally.
- **global** (``scope="global"``): every worker holds every row, for small reference data
  read with any key. Rows reach the other workers through the table's changelog, so they
  are checked once, by the worker that owns the row's partition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.engine.agent import AgentRuntime, AgentServices, AgentSpec, current_agents
from packetflow.engine.transport import Record, partition_for_key

if TYPE_CHECKING:
    from packetflow.engine.topology import Topology

R = TypeVar("R", bound=Intent)
SCOPES = ("partitioned", "global")


class TableError(LookupError):
    """A table read that cannot be answered here (outside a worker, or a key not co-located)."""


class TableSpec(AgentSpec):
    kind = "table"

    def __init__(
        self, name: str, topic: str, row: type[Intent], scope: str, public: bool = False
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope={scope!r}: use 'partitioned' or 'global'")
        self.name = name
        self.public = public
        self.topic = topic
        self.row = row
        self.intent_types = (row,)
        self.scope = scope
        self.copartitioned = scope == "partitioned"
        self.description = f"{scope} table of {row.intent_type} by record key"
        self.state = StateSpec(
            initial=lambda: None,
            encode=lambda value: value.model_dump_json().encode(),
            decode=row.model_validate_json,
            type_name=row.__name__,
        )

    def followed(self, topology: Topology) -> list[str]:
        return [topology.changelog_topic(self.name)] if self.scope == "global" else []

    def describe(self) -> dict[str, Any]:
        return {"row": self.row.intent_type, "scope": self.scope}

    def runtime(self, services: AgentServices) -> AgentRuntime:
        return TableRuntime(self, services)


class TableRuntime(AgentRuntime):
    def __init__(self, spec: TableSpec, services: AgentServices) -> None:
        assert services.store is not None
        self.spec = spec
        self.services = services
        self.store = services.store
        self.partitions = services.topology.topics[spec.topic]
        self.rows: dict[bytes, Intent] = {}  # global tables: every row, from the changelog

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        self.store.put(record.partition, record.key, intent)

    def follow(self, record: Record) -> None:
        key = record.key or b""
        if record.value is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = self.spec.row.model_validate_json(record.value)

    def get(self, key: str | bytes) -> Intent | None:
        raw = key.encode() if isinstance(key, str) else key
        if self.spec.scope == "global":
            return self.rows.get(raw)
        p = partition_for_key(raw, self.partitions)
        if p not in self.services.owned():
            raise TableError(
                f"table {self.spec.name}: key {raw.decode(errors='replace')!r} is on partition "
                f"{p}, which this worker does not own; join only streams keyed and partitioned "
                "like the table, or declare it scope='global'"
            )
        return self.store.peek(p, raw)

    def state(self, key: bytes | None) -> Any:
        if self.spec.scope == "global":
            return self.rows.get(key or b"")
        return self.store.find(key)


class Table(Generic[R]):
    """A reactor's handle on a table: ``table.get(key)`` inside a reactor run by a worker."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.name = spec.name

    def get(self, key: str | bytes, default: R | None = None) -> R | None:
        """The newest row for ``key`` (``default`` when there is none)."""
        agents = current_agents.get(None)
        runtime = None if agents is None else agents.get(self.name)
        if not isinstance(runtime, TableRuntime):
            raise TableError(
                f"table {self.name} is read inside a reactor run by a worker of its topology"
            )
        row = runtime.get(key)
        return default if row is None else row  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Table({self.name!r}, {self.spec.row.__name__}, scope={self.spec.scope!r})"
