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

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.engine.agent import (
    AgentRuntime,
    AgentServices,
    AgentSpec,
    StoreDecl,
    current_agents,
)
from packetflow.engine.names import TopicNames
from packetflow.engine.transport import Record, partition_for_key

R = TypeVar("R", bound=Intent)
SCOPES = ("partitioned", "global")


class TableError(LookupError):
    """A table read that cannot be answered here (outside a worker, or a key not co-located)."""


def row_state(row: type[Intent]) -> StateSpec[Any]:
    """A table's store: the newest row (the intent itself) per key."""
    return StateSpec(
        initial=lambda: None,
        encode=lambda value: value.model_dump_json().encode(),
        decode=row.model_validate_json,
        type_name=row.__name__,
    )


@dataclass(frozen=True, kw_only=True)
class TableSpec(AgentSpec):
    kind: ClassVar[str] = "table"
    row: type[Intent]
    scope: str = "partitioned"
    intent_types: tuple[type[Intent], ...] = ()
    stores: tuple[StoreDecl, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope={self.scope!r}: use 'partitioned' or 'global'")
        object.__setattr__(self, "intent_types", (self.row,))
        object.__setattr__(self, "stores", (StoreDecl("", row_state(self.row)),))
        object.__setattr__(self, "copartitioned", self.scope == "partitioned")
        object.__setattr__(
            self, "description", f"{self.scope} table of {self.row.intent_type} by record key"
        )

    def followed(self, names: TopicNames) -> list[str]:
        return [names.changelog(self.name)] if self.scope == "global" else []

    def describe(self) -> dict[str, Any]:
        return {"row": self.row.intent_type, "scope": self.scope}

    def runtime(self, services: AgentServices) -> AgentRuntime:
        return TableRuntime(self, services)


class TableRuntime(AgentRuntime):
    def __init__(self, spec: TableSpec, services: AgentServices) -> None:
        self.spec = spec
        self.services = services
        self.store = services.store
        self.partitions = services.partitions(spec.topic)
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
