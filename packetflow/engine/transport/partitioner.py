"""Kafka's default partitioner (murmur2 of the key), shared by every transport and by tables
that must know where a key lives."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

_partitions_by_key: dict[tuple[bytes, int], int] = {}


def group_of(key: bytes, separator: bytes) -> bytes:
    """The part of ``key`` that picks its partition on a topic keyed by groups: up to the
    first ``separator`` (the whole key when it has none). ``b"g1/a"`` and ``b"g1/b"`` land
    together, so what acts on a whole group finds it on one partition."""
    return key.split(separator, 1)[0]


def partition_for_key(key: bytes, count: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), memoised: pure-Python murmur2 is slow."""
    cached = _partitions_by_key.get((key, count))
    if cached is None:
        if len(_partitions_by_key) > 100_000:
            _partitions_by_key.clear()
        cached = _partitions_by_key[(key, count)] = (murmur2(key) & 0x7FFFFFFF) % count
    return cached
