"""The Kafka the benchmark runs on: found or started, plus the few admin calls the harness needs.

Which broker: ``--bootstrap``, else ``$PACKETFLOW_TEST_BOOTSTRAP``, else 127.0.0.1:9092 if
something answers there, else a local one started with ``packetflow kafka start`` (and
stopped again at the end, because this run started it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord, TopicPartition

from benchmarks.config import PARTITIONS
from packetflow import localkafka

DEFAULT_PORT = 9092


@dataclass
class Broker:
    bootstrap: str
    kafka_version: str
    started_by_us: bool = False

    def stop_if_ours(self) -> None:
        if self.started_by_us:
            localkafka.stop(int(self.bootstrap.rsplit(":", 1)[1]))


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def _version_of(bootstrap: str) -> str:
    """Kafka's version when the broker is a local one PacketFlow manages, else unknown."""
    host, _, port = bootstrap.rpartition(":")
    if host in ("127.0.0.1", "localhost") and port.isdigit():
        with contextlib.suppress(Exception):
            if localkafka.status(int(port)).running:
                return localkafka.KAFKA_VERSION
    return "unknown (external broker)"


def find_or_start(bootstrap: str | None, say: Callable[[str], None]) -> Broker:
    chosen = bootstrap or os.environ.get("PACKETFLOW_TEST_BOOTSTRAP")
    if chosen:
        return Broker(chosen, _version_of(chosen))
    if _answers("127.0.0.1", DEFAULT_PORT):
        chosen = f"127.0.0.1:{DEFAULT_PORT}"
        return Broker(chosen, _version_of(chosen))
    say(f"no Kafka on 127.0.0.1:{DEFAULT_PORT}: starting one (packetflow kafka start)")
    status = localkafka.start(DEFAULT_PORT)
    return Broker(
        status.bootstrap, localkafka.KAFKA_VERSION, started_by_us=not status.already_running
    )


def run_on_kafka(bootstrap: str | None, run: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """What a side benchmark's ``main`` does: find (or start) the broker, ``run`` against its
    ``kafka://`` URL, stop the broker again if this run started it."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    found = find_or_start(bootstrap, print)
    try:
        asyncio.run(run(f"kafka://{found.bootstrap}"))
    finally:
        found.stop_if_ours()


def end_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


class Admin:
    """Topic creation and deletion, end offsets, group state: what the harness asks Kafka."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-harness")
        self._offsets = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, client_id="bench-harness", enable_auto_commit=False
        )

    async def start(self) -> None:
        await self._admin.start()
        await self._offsets.start()

    async def close(self) -> None:
        await self._offsets.stop()
        await self._admin.close()

    async def create_topics(
        self, names: Iterable[str], partitions: int = PARTITIONS, *, compact: bool = False
    ) -> None:
        names = list(names)
        # kept whole whatever the broker's retention (the bundled one keeps 1 GiB a
        # partition; 10,000,000 deposits are ~1.5 GiB a partition)
        configs = {"retention.bytes": "-1", "retention.ms": "-1"}
        if compact:
            configs["cleanup.policy"] = "compact"
        with contextlib.suppress(TopicAlreadyExistsError):
            await self._admin.create_topics(
                [NewTopic(n, partitions, 1, topic_configs=configs) for n in names]
            )
        for _ in range(100):  # until every partition has a leader
            described = await self._admin.describe_topics(names)
            if all(d.get("error_code", 0) == 0 and d.get("partitions") for d in described):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topics not ready: {names}")

    async def delete_topics_with_prefix(self, prefix: str) -> int:
        doomed = [t for t in await self._admin.list_topics() if t.startswith(prefix)]
        if doomed:
            with contextlib.suppress(Exception):
                await self._admin.delete_topics(doomed)
        return len(doomed)

    async def end_offsets(self, topic: str, partitions: int = PARTITIONS) -> int:
        """Sum of the topic's high watermarks: records written and acknowledged."""
        return sum((await self.partition_ends(topic, partitions)).values())

    async def partition_ends(self, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
        """Each partition's high watermark."""
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await self._offsets.end_offsets(tps)
        return {tp.partition: end for tp, end in ends.items()}

    async def committed(self, group: str, topic: str) -> int:
        """Sum of ``group``'s committed offsets on ``topic``: the input records it is done
        with (an exactly-once contestant's output offsets also count transaction markers)."""
        offsets = await self._admin.list_consumer_group_offsets(group)
        return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)

    async def group_stable(self, group: str) -> bool:
        """True once the group has members and a settled assignment."""
        with contextlib.suppress(Exception):
            for response in await self._admin.describe_consumer_groups([group]):
                for g in response.groups:
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    if g[1] == group and g[2] == "Stable" and g[5]:
                        return True
        return False


async def read_topic(
    bootstrap: str,
    topic: str,
    on_record: Callable[[ConsumerRecord], None],
    partitions: int = PARTITIONS,
    *,
    starts: dict[int, int] | None = None,
) -> int:
    """Hand every record of ``topic``, from the beginning (or ``starts[partition]``) to its
    current end, to ``on_record``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # "latest" would race the seek to the beginning
        client_id="bench-verify",
        isolation_level="read_committed",  # an exactly-once contestant's aborted writes: no
    )
    await consumer.start()
    count = 0
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            if starts and starts.get(tp.partition):
                consumer.seek(tp, starts[tp.partition])
        remaining = {tp for tp in tps if ends[tp] > (starts or {}).get(tp.partition, 0)}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=50_000)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < ends[tp]:
                        on_record(m)
                        count += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return count
