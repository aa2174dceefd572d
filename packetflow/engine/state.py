"""Keyed reactor state, per partition, backed by a compacted changelog topic.

Reads and writes go to an in-memory dict; each batch's changed keys are written to the
changelog once (the last value wins, which is what compaction keeps), before the batch's
offsets are committed. When a partition is assigned, its dict is rebuilt from the changelog.
A compacted topic refuses records without a key, so records without one share the state
of the empty key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from packetflow.core.reactor import StateSpec
from packetflow.engine.transport import Record


class StateStore:
    """The state of one stateful reactor: ``partition -> key -> value``."""

    def __init__(self, spec: StateSpec[Any], changelog_topic: str, source_topic: str) -> None:
        self.spec = spec
        self.changelog_topic = changelog_topic
        self.source_topic = source_topic  # physical; its partitions are this store's
        self._partitions: dict[int, dict[bytes, Any]] = {}
        self._dirty: dict[int, dict[bytes, Any]] = {}

    def get(self, partition: int, key: bytes | None) -> Any:
        values = self._partitions.get(partition)
        if key is None:
            key = b""
        if values is not None and key in values:
            return values[key]
        return self.spec.initial()

    def peek(self, partition: int, key: bytes | None) -> Any | None:
        """The stored value, or None when ``key`` has none (no initial value made)."""
        values = self._partitions.get(partition)
        return None if values is None else values.get(b"" if key is None else key)

    def put(self, partition: int, key: bytes | None, value: Any) -> None:
        if key is None:
            key = b""
        self._partitions.setdefault(partition, {})[key] = value
        self._dirty.setdefault(partition, {})[key] = value

    def delete(self, partition: int, key: bytes | None) -> None:
        """Forget ``key`` (a tombstone on the changelog, which compaction then removes)."""
        if key is None:
            key = b""
        values = self._partitions.get(partition)
        if values is not None:
            values.pop(key, None)
        self._dirty.setdefault(partition, {})[key] = None

    def items(self, partition: int) -> Iterator[tuple[bytes, Any]]:
        return iter(self._partitions.get(partition, {}).items())

    def find(self, key: bytes | None) -> Any | None:
        """The value for ``key`` on whichever local partition holds it (for inspection)."""
        if key is None:
            key = b""
        for values in self._partitions.values():
            if key in values:
                return values[key]
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self._partitions.values())

    @property
    def partitions(self) -> set[int]:
        return set(self._partitions)

    def take_changes(self) -> list[tuple[int, bytes, bytes | None]]:
        """The changelog records owed for this batch: (partition, key, encoded value or None)."""
        encode = self.spec.encode
        out = [
            (partition, key, None if value is None else encode(value))
            for partition, changes in self._dirty.items()
            for key, value in changes.items()
        ]
        self._dirty.clear()
        return out

    def restore(self, record: Record) -> None:
        values = self._partitions.setdefault(record.partition, {})
        key = b"" if record.key is None else record.key
        if record.value is None:
            values.pop(key, None)
        else:
            values[key] = self.spec.decode(record.value)

    def open_partition(self, partition: int) -> None:
        self._partitions[partition] = {}

    def close_partition(self, partition: int) -> None:
        self._partitions.pop(partition, None)
        self._dirty.pop(partition, None)
