"""Tests for the local Kafka broker tooling and the session broker fixture."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from packetflow.cli import localkafka


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_of_never_started_port_is_not_running(tmp_path: Path) -> None:
    port = _free_port()
    st = localkafka.status(port, home=tmp_path)
    assert not st.running
    assert st.pid is None
    assert st.port == port
    assert st.run_dir == tmp_path / "kafka" / f"run-{port}"
    assert localkafka.stop(port, home=tmp_path) is None


def test_invalid_port_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(localkafka.LocalKafkaError, match="invalid port"):
        localkafka.start(0, home=tmp_path)


@pytest.mark.kafka
async def test_produce_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = f"pf-test-roundtrip-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    sent = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in sent:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"pf-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[tuple[bytes | None, bytes | None]] = []
    try:
        for _ in range(60):
            batches = await consumer.getmany(timeout_ms=500)
            received.extend((m.key, m.value) for msgs in batches.values() for m in msgs)
            if len(received) >= len(sent):
                break
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted(received) == sorted(sent)
