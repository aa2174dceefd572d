"""Keyed reactor state, per partition, backed by a compacted changelog topic.

Reads and writes go to an in-memory dict; each batch's changed keys are written to the
changelog once (the last value wins, which is what compaction keeps), before the batch's
offsets are committed. A reactor's new value is encoded before its effects are sent
(:meth:`StateStore.encode`), so a value that cannot be written to the changelog (not JSON, an
int beyond 64 bits, larger than the changelog takes) fails the record that produced it
(:class:`StateError`), never the batch. Agents' values (:meth:`StateStore.put`, changed in
place many times per batch) are encoded once, at the batch's end; one that does not encode
there is logged and left out of the changelog rather than failing the batch. When a partition
is assigned, its dict is rebuilt from the changelog. A compacted topic refuses records
without a key, so records without one share the state of the empty key.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from typing import Any

from packetflow.core.effects import Delivery
from packetflow.core.reactor import StateSpec
from packetflow.engine.transport import BROKER_MAX_MESSAGE_BYTES, Record, record_bytes

log = logging.getLogger("packetflow.worker")


class StateError(ValueError):
    """A new state that cannot be stored: it does not encode, or is too large."""

    reason = "state-error"


class StateStore:
    """The state of one stateful reactor: ``partition -> key -> value``, in memory."""

    durable = False  # True: partitions kept on disk between assignments (state_disk)

    def __init__(
        self,
        spec: StateSpec[Any],
        changelog_topic: str,
        source_topic: str,
        *,
        limit: int = BROKER_MAX_MESSAGE_BYTES,
    ) -> None:
        self.spec = spec
        self.changelog_topic = changelog_topic
        self.source_topic = source_topic  # physical; its partitions are this store's
        self.limit = limit  # the changelog's max.message.bytes
        self._partitions: dict[int, dict[bytes, Any]] = {}
        # per partition and key: the encoded record, None (deleted), or [value] to encode later
        self._dirty: dict[int, dict[bytes, bytes | list[Any] | None]] = {}
        self.restore_errors = 0
        self.encode_errors = 0

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

    def encode(self, value: Any, key: bytes | None = None) -> bytes:
        """``value`` as the changelog record of ``key``; raises :class:`StateError` if it
        cannot be one."""
        try:
            encoded = self.spec.encode(value)
        except Exception as exc:  # orjson, pydantic and users' encoders raise their own
            raise StateError(f"new state does not encode: {type(exc).__name__}: {exc}") from None
        size = record_bytes(key, encoded, ())
        if size > self.limit:
            raise StateError(
                f"new state is {size} bytes, more than the changelog takes ({self.limit})"
            )
        return encoded

    def put(self, partition: int, key: bytes | None, value: Any) -> None:
        """Store ``value``, encoded for the changelog at the batch's end."""
        if key is None:
            key = b""
        self._partitions.setdefault(partition, {})[key] = value
        self._dirty.setdefault(partition, {})[key] = [value]

    def put_encoded(self, partition: int, key: bytes | None, value: Any, encoded: bytes) -> None:
        """Store ``value`` whose changelog record :meth:`encode` already made."""
        if key is None:
            key = b""
        self._partitions.setdefault(partition, {})[key] = value
        self._dirty.setdefault(partition, {})[key] = encoded

    def release(self, partition: int, key: bytes | None) -> None:
        """Nothing: in this store memory is where the state lives (state_disk's drops the
        value from its cache)."""

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
        out = []
        for partition, changes in self._dirty.items():
            for key, change in changes.items():
                if isinstance(change, list):
                    try:
                        change = self.encode(change[0], key)
                    except StateError as exc:
                        self.encode_errors += 1
                        log.error("%s: key %r left out of the changelog: %s",
                                  self.changelog_topic, key, exc)
                        self._left_out(partition, key)
                        continue
                out.append((partition, key, change))
        self._dirty.clear()
        return out

    def _left_out(self, partition: int, key: bytes) -> None:
        """``key``'s value did not encode and is not on the changelog (durable stores also
        drop it from what they hold)."""

    def restore(self, record: Record) -> None:
        values = self._partitions.setdefault(record.partition, {})
        key = b"" if record.key is None else record.key
        if record.value is None:
            values.pop(key, None)
            return
        try:
            values[key] = self.spec.decode(record.value)
        except Exception as exc:  # a record no worker wrote: skip it rather than never start
            self.restore_errors += 1
            values.pop(key, None)
            log.error(
                "changelog %s[%d] offset %d: cannot decode the state of key %r (%s: %s); "
                "the key starts again from its initial state",
                record.topic,
                record.partition,
                record.offset,
                key,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )

    def open_partition(self, partition: int) -> int | None:
        """Make ``partition`` empty before its restore; returns the changelog offset to
        restore from (None: the beginning)."""
        self._partitions[partition] = {}
        return None

    def forget_local(self, partition: int) -> None:
        """Restore ``partition`` from the changelog's beginning after all (durable stores)."""

    def restored(self, partition: int) -> None:
        """``partition``'s restore has read the changelog to its end."""

    def sent(self, partition: int, ack: Awaitable[Delivery]) -> None:
        """A changelog record of ``partition`` was sent (durable stores note its offset)."""

    async def persist(self, *, fenced: bool = False) -> None:
        """The changes sent to the changelog are acknowledged (or committed): durable
        stores keep them."""

    def close(self) -> None:
        """The worker stops: let go of what the store holds outside memory."""

    def close_partition(self, partition: int) -> None:
        self._partitions.pop(partition, None)
        self._dirty.pop(partition, None)
