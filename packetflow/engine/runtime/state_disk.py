"""Keyed state on local disk (RocksDB through ``rocksdict``), for state larger than memory.

The same contract as :class:`~packetflow.engine.runtime.state.StateStore`, the changelog still
the source of truth, but each partition's values live in a RocksDB database under
``<state_dir>/<changelog topic>/<partition>``, beside the changelog offset they reflect. A
partition taken again (a restarted worker, a rebalance back) replays only the changelog's
tail from that offset instead of the whole topic.

The local database only ever holds state the changelog has: a batch's changes are written to
it after the broker acknowledged them (at-least-once) or after the batch's transaction
committed (exactly-once), with the new offset in the same atomic write. A crash in between
leaves the database behind the changelog, and the next restore replays the difference
(replaying a changelog from an older offset gives the same values). Until then the changes
stay in memory, where reads find them. Reads go through a bounded cache of decoded values;
what it misses is read from RocksDB and decoded.

A database another process holds (two workers sharing a state directory during a
hand-over) is not waited for: the partition is restored in full into a temporary database
instead, and the warning says so.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from packetflow.core.effects import Delivery
from packetflow.core.reactor import StateSpec
from packetflow.engine.runtime.state import StateError, StateStore
from packetflow.engine.transport import BROKER_MAX_MESSAGE_BYTES, Record

log = logging.getLogger("packetflow.worker")

DEFAULT_CACHE = 100_000  # decoded values a store keeps in memory, all its partitions together
BLOCK_CACHE_BYTES = 64 << 20  # RocksDB's block cache, shared by every partition of a store
WRITE_BUFFER_BYTES = 16 << 20  # per partition; two of them at most before a flush to disk
RESTORE_BATCH = 10_000  # changelog records a restore writes to the database at once
_META = "packetflow"  # column family of the changelog offset, apart from users' keys
_OFFSET = b"changelog-offset"
_GONE = object()  # in the cache: deleted (the database may still hold the old value)
_ABSENT = object()


def _options(cache: Any) -> Any:
    from rocksdict import BlockBasedOptions, Options

    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(10, False)  # a miss (a new key) answered without reading a block
    options.set_block_based_table_factory(table)
    return options


class _Partition:
    """One partition's database and the changelog offset it reflects."""

    def __init__(self, path: Path, cache: Any) -> None:
        from rocksdict import Rdict

        self.temporary = False
        self.db: Any  # rocksdict's Rdict in raw mode: keys and values are bytes
        options = _options(cache)
        families = {_META: _options(cache)}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = Rdict(str(path), options, column_families=families)
        except Exception as exc:  # held by another worker: rocksdict raises its own
            if "lock" not in str(exc).lower():
                raise
            log.warning(
                "state directory %s is in use by another worker; restoring this partition in "
                "full into a temporary database", path
            )
            path = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            self.temporary = True
            self.db = Rdict(str(path), options, column_families=families)
        self.path = path
        try:
            self.meta = self.db.get_column_family_handle(_META)
            stored = self.db.get_column_family(_META).get(_OFFSET)
            self.offset: int | None = None if stored is None else int(stored)
        except BaseException:
            self.close()
            raise
        self._restoring: Any = None  # the WriteBatch a restore fills, written every RESTORE_BATCH
        self._restored = 0
        self._last = -1

    def restore(self, record: Record) -> None:
        """Apply one changelog record (its bytes as they are: decoded when first read)."""
        from rocksdict import WriteBatch

        if self._restoring is None:
            self._restoring = WriteBatch(raw_mode=True)
        key = b"" if record.key is None else record.key
        if record.value is None:
            self._restoring.delete(key)
        else:
            self._restoring.put(key, record.value)
        self._last = record.offset
        self._restored += 1
        if self._restored % RESTORE_BATCH == 0:
            self.restored()

    def restored(self) -> None:
        """Write what the restore read so far, with the offset after it."""
        batch, self._restoring = self._restoring, None
        if batch is not None:
            self._commit(batch, self._last + 1)

    def write(self, changes: dict[bytes, bytes | None], offset: int | None) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._commit(batch, offset)

    def _commit(self, batch: Any, offset: int | None) -> None:
        """Write ``batch`` and the changelog offset it brings the database to, atomically
        (None: what the database holds can no longer be placed in the changelog)."""
        if offset is None:
            batch.delete(_OFFSET, self.meta)
        else:
            batch.put(_OFFSET, str(offset).encode(), self.meta)
        self.db.write(batch)
        self.offset = offset

    def wipe(self) -> None:
        """Forget every value (the changelog no longer has what they came from)."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        first = next(iter(self.db.keys()), None)
        if first is not None:
            last = next(iter(self.db.keys(backwards=True)))
            batch.delete_range(first, last + b"\x00")
        self._commit(batch, None)

    def close(self) -> None:
        self.db.close()
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


class DiskStateStore(StateStore):
    """A :class:`StateStore` whose partitions live in RocksDB under ``directory``."""

    durable = True

    def __init__(
        self,
        spec: StateSpec[Any],
        changelog_topic: str,
        source_topic: str,
        directory: str | Path,
        *,
        limit: int = BROKER_MAX_MESSAGE_BYTES,
        cache_size: int = DEFAULT_CACHE,
    ) -> None:
        super().__init__(spec, changelog_topic, source_topic, limit=limit)
        from rocksdict import Cache

        self.directory = Path(directory) / changelog_topic
        self.cache_size = cache_size
        self._block_cache = Cache(BLOCK_CACHE_BYTES)
        self._dbs: dict[int, _Partition] = {}
        self._cached = 0
        # taken for the changelog, not yet in the database: per partition, key -> record
        self._sent: dict[int, dict[bytes, bytes | None]] = {}
        # the first and last changelog send of the batch, per partition
        self._acks: dict[int, list[Awaitable[Delivery]]] = {}

    # -- reads and writes (values: self._partitions is the cache) ---------------------------

    def _load(self, partition: int, key: bytes) -> Any:
        """The value of ``key``: cached, else read from the database and cached; _GONE if
        there is none."""
        values = self._partitions.get(partition)
        if values is None:
            return _GONE
        value = values.get(key, values)  # values itself: not cached
        if value is not values:
            return value
        db = self._dbs.get(partition)
        raw = None if db is None else db.db.get(key)
        if raw is None:
            return _GONE  # not cached: a new key's initial state is the reactor's to make
        try:
            value = self.spec.decode(raw)
        except Exception as exc:  # a record no worker wrote: the key starts again
            self.restore_errors += 1
            log.error(
                "%s[%d]: cannot decode the stored state of key %r (%s); the key starts again "
                "from its initial state", self.changelog_topic, partition, key,
                type(exc).__name__,
            )
            self._cache(partition, key, _GONE)  # said once
            return _GONE
        self._cache(partition, key, value)
        return value

    def get(self, partition: int, key: bytes | None) -> Any:
        value = self._load(partition, b"" if key is None else key)
        return self.spec.initial() if value is _GONE else value

    def peek(self, partition: int, key: bytes | None) -> Any | None:
        value = self._load(partition, b"" if key is None else key)
        return None if value is _GONE else value

    def _cache(self, partition: int, key: bytes, value: Any) -> None:
        """Cache ``value`` as the newest entry (the cache evicts the oldest written first)."""
        values = self._partitions.setdefault(partition, {})
        if values.pop(key, _ABSENT) is _ABSENT:
            self._cached += 1
        values[key] = value

    def release(self, partition: int, key: bytes | None) -> None:
        """Drop ``key``'s decoded value from the cache, unless it is a change not yet in the
        database (changed since the batch was taken, or sent and not yet persisted)."""
        key = b"" if key is None else key
        values = self._partitions.get(partition)
        if values is None or key not in values:
            return
        if key in self._dirty.get(partition, {}) or key in self._sent.get(partition, {}):
            return
        del values[key]
        self._cached -= 1

    def put(self, partition: int, key: bytes | None, value: Any) -> None:
        key = b"" if key is None else key
        self._cache(partition, key, value)
        self._dirty.setdefault(partition, {})[key] = [value]

    def put_encoded(self, partition: int, key: bytes | None, value: Any, encoded: bytes) -> None:
        key = b"" if key is None else key
        self._cache(partition, key, value)
        self._dirty.setdefault(partition, {})[key] = encoded

    def delete(self, partition: int, key: bytes | None) -> None:
        key = b"" if key is None else key
        self._cache(partition, key, _GONE)
        self._dirty.setdefault(partition, {})[key] = None

    def items(self, partition: int) -> Iterator[tuple[bytes, Any]]:
        values = self._partitions.get(partition, {})
        db = self._dbs.get(partition)
        if db is not None:
            for key, raw in db.db.items():
                value = values.get(key, values)
                if value is values:
                    try:
                        value = self.spec.decode(raw)
                    except Exception:  # logged when read by key
                        continue
                if value is not _GONE:
                    yield key, value
            stored = db.db
            for key, value in list(values.items()):
                if value is not _GONE and stored.get(key) is None:
                    yield key, value
            return
        for key, value in list(values.items()):
            if value is not _GONE:
                yield key, value

    def find(self, key: bytes | None) -> Any | None:
        """For inspection: read without caching (queries must not grow the cache)."""
        key = b"" if key is None else key
        for partition, db in list(self._dbs.items()):
            cached = self._partitions.get(partition, {}).get(key, _ABSENT)
            if cached is _GONE:
                continue
            if cached is not _ABSENT:
                return cached
            raw = db.db.get(key)
            if raw is not None:
                with contextlib.suppress(Exception):  # logged when read by key
                    return self.spec.decode(raw)
        return None

    @property
    def cached(self) -> int:
        """Decoded values held in memory (at most ``cache_size`` after each batch, plus what
        the batch changed or read)."""
        return self._cached

    def __len__(self) -> int:
        """Keys stored, estimated by RocksDB (exact for changes not yet written to it)."""
        return sum(
            db.db.property_int_value("rocksdb.estimate-num-keys") or 0
            for db in self._dbs.values()
        )

    # -- the changelog and the database ------------------------------------------------------

    def take_changes(self) -> list[tuple[int, bytes, bytes | None]]:
        # what an earlier batch sent and never persisted failed with it: never written
        self._sent.clear()
        self._acks.clear()
        out = super().take_changes()
        for partition, key, value in out:
            self._sent.setdefault(partition, {})[key] = value
        return out

    def _left_out(self, partition: int, key: bytes) -> None:
        """A value that did not encode is not kept in the cache either (the database and
        the changelog never get it)."""
        if self._partitions.get(partition, {}).pop(key, _ABSENT) is not _ABSENT:
            self._cached -= 1

    def sent(self, partition: int, ack: Awaitable[Delivery]) -> None:
        """A changelog record of ``partition`` was sent (the first and last give offsets)."""
        acks = self._acks.get(partition)
        if acks is None:
            self._acks[partition] = [ack, ack]
        else:
            acks[1] = ack

    async def persist(self, *, fenced: bool = False) -> None:
        """Write the changes the broker has acknowledged (or committed) to the databases,
        each partition's with the changelog offset after them; then trim the cache.

        Unless the producer is ``fenced`` (exactly-once), a batch whose first record does not
        follow the database's offset means another writer came in between (this worker lost
        the partition for a while): the changes are kept, the offset dropped, so the next
        restore reads the whole changelog."""
        for partition, changes in self._sent.items():
            db = self._dbs.get(partition)
            acks = self._acks.get(partition)
            if db is None or acks is None:
                continue
            first, last = await acks[0], await acks[1]
            if not fenced and db.offset is not None and first.offset != db.offset:
                log.warning(
                    "%s[%d]: another writer wrote offsets %d..%d; this partition will be "
                    "restored in full when taken again",
                    self.changelog_topic, partition, db.offset, first.offset - 1,
                )
                db.write(changes, None)
            else:
                db.write(changes, last.offset + 1)
        self._sent.clear()
        self._acks.clear()
        self._trim()

    def _trim(self) -> None:
        """Evict the oldest cached values past ``cache_size``, but those changed since the
        batch was taken (a buffered reactor runs while the batch commits): what is left
        is in the databases."""
        excess = self._cached - self.cache_size
        if excess <= 0:
            return
        for partition, values in self._partitions.items():
            dirty = self._dirty.get(partition, {})
            doomed: list[bytes] = []
            for key in values:
                if len(doomed) >= excess:
                    break
                if key not in dirty:
                    doomed.append(key)
            for key in doomed:
                del values[key]
            excess -= len(doomed)
            self._cached -= len(doomed)
            if excess <= 0:
                break

    # -- restore -----------------------------------------------------------------------------

    def open_partition(self, partition: int) -> int | None:
        self.close_partition(partition)
        db = _Partition(self.directory / str(partition), self._block_cache)
        self._dbs[partition] = db
        self._partitions[partition] = {}
        return db.offset

    def forget_local(self, partition: int) -> None:
        """The changelog no longer holds what this partition's database came from (it was
        deleted and made again, or cut): start it empty."""
        db = self._dbs.get(partition)
        if db is not None:
            db.wipe()

    def restore(self, record: Record) -> None:
        db = self._dbs.get(record.partition)
        if db is not None:
            db.restore(record)

    def restored(self, partition: int) -> None:
        db = self._dbs.get(partition)
        if db is not None:
            db.restored()

    def close_partition(self, partition: int) -> None:
        values = self._partitions.pop(partition, None)
        if values is not None:
            self._cached -= len(values)
        self._dirty.pop(partition, None)
        self._sent.pop(partition, None)
        self._acks.pop(partition, None)
        db = self._dbs.pop(partition, None)
        if db is not None:
            db.close()

    def close(self) -> None:
        for partition in list(self._dbs):
            self.close_partition(partition)


__all__ = ["DEFAULT_CACHE", "DiskStateStore", "StateError"]
