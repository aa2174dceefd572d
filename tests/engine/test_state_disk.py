"""State on disk (``Worker(state_dir=...)``): a worker taking partitions again replays only
the changelog's tail, the disk holds only what the changelog has, the decoded cache stays
bounded. The restart tests run on every transport (the ``broker`` fixture)."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel
from support.running import new_topology, running, unique

from benchmarks.harness import restores_in
from packetflow import Context, Intent, Topology
from packetflow.core.effects import Delivery
from packetflow.core.reactor import StateSpec
from packetflow.engine.runtime.state_disk import DiskStateStore
from packetflow.engine.transport import TopicPartition, TopicSpec, open_transport
from packetflow.engine.transport.base import Acked


class Add(Intent, type_name="disk.Add", key="key"):
    key: str
    n: int


class Tally(BaseModel):
    count: int = 0
    total: int = 0


def _tallying(guarantee: str) -> Topology:
    topo = new_topology("disk", processing_guarantee=guarantee)

    @topo.reactor(Add, topic=unique("adds"), state=Tally, public=True)
    def tally(intent: Add, ctx: Context, state: Tally) -> tuple[Tally, None]:
        return Tally(count=state.count + 1, total=state.total + intent.n), None

    return topo


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_worker_taking_its_partitions_again_replays_only_the_changelog_tail(
    broker: str, tmp_path: Path, guarantee: str, caplog: pytest.LogCaptureFixture
) -> None:
    topo = _tallying(guarantee)
    async with running(topo, broker, state_dir=tmp_path / "state") as run:
        for n in (1, 2, 3):
            await run.send(Add(key="a", n=n))
        await run.send(Add(key="b", n=7))
        await run.idle()
        assert run.state("tally", "a") == Tally(count=3, total=6)

    # another worker (state in memory) moves "a" on while the first is away: the tail
    async with running(topo, broker) as run:
        await run.send(Add(key="a", n=4))
        await run.idle()
        assert run.worker.metrics.restored["tally"] >= 2  # it read the whole changelog
        # how long each changelog partition's restore took, as a metric
        took = run.worker.metrics.snapshot().get("restore_seconds", {})
        changelog = topo.physical(topo.changelog_topic("tally"))
        assert {f"{changelog}[{p}]" for p in range(2)} <= set(took)
        assert all(0 < s < 30 for s in took.values())

    caplog.set_level(logging.INFO, "packetflow.worker")
    async with running(topo, broker, state_dir=tmp_path / "state") as run:
        await run.idle()
        assert run.worker.metrics.restored["tally"] == 1  # a's record of the other worker
        assert run.state("tally", "a") == Tally(count=4, total=10)
        assert run.state("tally", "b") == Tally(count=1, total=7)
        await run.send(Add(key="b", n=1))
        await run.idle()
        assert run.state("tally", "b") == Tally(count=2, total=8)
    # what the worker says it replayed, read as the benchmark reads it
    log = tmp_path / "worker.log"
    log.write_text("\n".join(r.getMessage() for r in caplog.records))
    assert restores_in(log)[0] == 1


async def test_a_restore_reads_from_its_start_and_from_the_beginning_when_it_is_outside(
    broker: str,
) -> None:
    """The transport half of the tail replay: ``starts`` within a partition are honoured;
    one past its end (a topic made again) reads all of it, after ``on_reset``."""
    topic = unique("changelog")
    tp = TopicPartition(topic, 0)
    transport = open_transport(broker)
    await transport.start()
    try:
        await transport.ensure_topics([TopicSpec(topic, 1, compacted=True)])
        producer = transport.producer()
        await producer.start()
        for i in range(3):
            await producer.send(topic, b"%d" % i, b"k%d" % i, (), 0)
        await producer.flush()
        await producer.stop()
        read: list[int] = []
        reset: list[TopicPartition] = []

        async def restore(start: int) -> int:
            read.clear()
            return await transport.read_partitions(
                [tp], lambda r: read.append(r.offset), starts={tp: start}, on_reset=reset.append
            )

        assert (await restore(2), read, reset) == (1, [2], [])
        assert (await restore(3), read, reset) == (0, [], [])  # at the end: nothing to replay
        assert (await restore(10), read, reset) == (3, [0, 1, 2], [tp])
    finally:
        await transport.stop()


async def test_local_state_from_another_changelog_is_restored_in_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A changelog made again (a new cluster, a deleted topic) ends before the offset the
    disk reflects: its values are dropped, not mixed with the new changelog's."""
    topo = _tallying("at_least_once")
    async with running(topo, f"memory://{unique('first')}", state_dir=tmp_path) as run:
        for n in range(5):
            await run.send(Add(key="a", n=n))
        await run.idle()
        assert run.state("tally", "a") == Tally(count=5, total=10)

    caplog.set_level(logging.WARNING, "packetflow.worker")
    async with running(topo, f"memory://{unique('second')}", state_dir=tmp_path) as run:
        await run.send(Add(key="b", n=1))
        await run.idle()
        assert run.state("tally", "a") is None
        assert run.state("tally", "b") == Tally(count=1, total=1)
    assert any("outside the changelog" in r.getMessage() for r in caplog.records)


def _store(directory: Path, cache_size: int = 100) -> DiskStateStore:
    spec = StateSpec(initial=int, encode=orjson.dumps, decode=orjson.loads, type_name="int")
    return DiskStateStore(spec, "t.r.changelog", "t.items", directory, cache_size=cache_size)


def _send(store: DiskStateStore, first_offset: int) -> int:
    """Hand the store's changes to a pretend changelog; returns the next offset."""
    offset = first_offset
    for partition, _key, _value in store.take_changes():
        store.sent(partition, Acked(Delivery("t.r.changelog", partition, offset)))
        offset += 1
    return offset


async def test_only_acknowledged_changes_reach_the_disk(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.open_partition(0) is None  # never written: restore from the beginning
    store.put_encoded(0, b"k", 1, b"1")
    await store.persist()
    _send(store, 0)
    await store.persist()  # acknowledged: on disk, with the offset after it
    store.put_encoded(0, b"k", 2, b"2")
    store.put_encoded(0, b"j", 5, b"5")
    _send(store, 1)  # sent, never acknowledged: the batch is rewound
    assert store.get(0, b"k") == 2  # the batch still reads its own changes
    store.close_partition(0)

    assert store.open_partition(0) == 1
    assert store.get(0, b"k") == 1
    assert store.peek(0, b"j") is None
    assert store.get(0, b"j") == 0  # the initial state
    store.close()


async def test_the_decoded_cache_stays_bounded_and_reads_fall_through_to_disk(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path, cache_size=10)
    store.open_partition(0)
    store.open_partition(1)
    for i in range(200):
        store.put_encoded(i % 2, b"k%d" % i, i, b"%d" % i)
    _send(store, 0)
    await store.persist()
    assert store.cached == 10
    assert [store.get(i % 2, b"k%d" % i) for i in range(200)] == list(range(200))
    store.delete(0, b"k0")
    assert store.peek(0, b"k0") is None  # deleted, though the disk still has it
    _send(store, 200)
    await store.persist()
    assert store.cached == 10
    assert store.peek(0, b"k0") is None
    assert dict(store.items(1))[b"k1"] == 1
    assert len(dict(store.items(0))) == 99
    assert store.find(b"k7") == 7
    store.close()


def test_a_database_held_by_another_worker_restores_into_a_temporary_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder, other = _store(tmp_path), _store(tmp_path)
    holder.open_partition(0)
    with caplog.at_level(logging.WARNING, "packetflow.worker"):
        assert other.open_partition(0) is None
    assert any("in use by another worker" in r.getMessage() for r in caplog.records)
    other.put_encoded(0, b"k", 3, b"3")
    assert other.get(0, b"k") == 3
    other.close()
    holder.close()
    leftovers = [p.name for p in (tmp_path / "t.r.changelog").iterdir()]
    assert leftovers == ["0"]  # the temporary database is gone


async def test_changes_of_a_batch_that_failed_never_reach_the_disk(tmp_path: Path) -> None:
    """A batch whose flush failed is never persisted; what the next batch persists is only
    its own, even when the rewind in between could not reach the broker."""
    store = _store(tmp_path)
    store.open_partition(0)
    store.put_encoded(0, b"lost", 1, b"1")
    _send(store, 0)  # never acknowledged
    store.put_encoded(0, b"kept", 2, b"2")
    _send(store, 0)
    await store.persist()
    store.close_partition(0)
    assert store.open_partition(0) == 1
    assert store.peek(0, b"lost") is None
    assert store.get(0, b"kept") == 2
    store.close()


async def test_changes_made_while_a_batch_commits_stay_cached_until_sent(tmp_path: Path) -> None:
    """A buffered reactor keeps running while the batch commits: its changes are neither
    evicted nor persisted with that batch, and go with the next."""
    store = _store(tmp_path, cache_size=0)  # evict all it can
    store.open_partition(0)
    store.put_encoded(0, b"a", 1, b"1")
    store.put_encoded(0, b"b", 2, b"2")
    _send(store, 0)
    store.put_encoded(0, b"c", 3, b"3")  # after the batch was taken
    await store.persist()
    assert store.get(0, b"c") == 3
    assert [key for _, key, _ in store.take_changes()] == [b"c"]
    store.close()


@pytest.mark.parametrize("fenced", [False, True])
async def test_a_gap_in_the_changelog_means_a_full_restore_unless_fenced(
    tmp_path: Path, fenced: bool
) -> None:
    """At-least-once, records of another writer between two of this store's batches (it
    lost the partition for a while) cannot be placed: the next restore reads everything.
    Exactly-once producers are fenced, and commit markers take offsets of their own."""
    store = _store(tmp_path)
    store.open_partition(0)
    store.put_encoded(0, b"k", 1, b"1")
    _send(store, 0)
    await store.persist(fenced=fenced)
    store.put_encoded(0, b"k", 2, b"2")
    _send(store, 5)  # offsets 1..4 written by someone else
    await store.persist(fenced=fenced)
    store.close_partition(0)
    assert store.open_partition(0) == (6 if fenced else None)
    assert store.get(0, b"k") == 2
    store.close()
