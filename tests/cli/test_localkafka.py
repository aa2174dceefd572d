"""Tests for the local Kafka broker tooling and the session broker fixture."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from aiokafka.helpers import create_ssl_context
from typer.testing import CliRunner

from packetflow import localkafka
from packetflow.cli import kafka as kafka_cli
from packetflow.localkafka import BrokerStatus
from packetflow.localkafka.broker import wipe_storage
from packetflow.localkafka.layout import plan


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


# --------------------------------------------------------------------------- helpers


def _sasl_ssl(
    st: BrokerStatus,
    *,
    password: str | None = None,
    mechanism: str = "SCRAM-SHA-256",
    client_cert: bool = False,
) -> dict[str, Any]:
    """aiokafka settings for the secure broker as user ``packetflow``."""
    assert st.ca_file is not None and st.client_cert is not None and st.client_key is not None
    cert = {"certfile": str(st.client_cert), "keyfile": str(st.client_key)} if client_cert else {}
    return {
        "bootstrap_servers": st.bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": st.username,
        "sasl_plain_password": password if password is not None else st.password,
        "ssl_context": create_ssl_context(cafile=str(st.ca_file), **cert),
    }


async def _create_topic(client: dict[str, Any], partitions: int, replicas: int) -> str:
    topic = f"pf-test-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(**client)
    async with asyncio.timeout(30):
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, replicas)])
        finally:
            await admin.close()
    return topic


async def _produce(client: dict[str, Any], topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client, acks="all", request_timeout_ms=30000)
    async with asyncio.timeout(60):
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, key=value)
        finally:
            await producer.stop()


async def _consume(client: dict[str, Any], topic: str, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        **client,
        group_id=f"pf-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[bytes] = []
    async with asyncio.timeout(60):
        await consumer.start()
        try:
            while len(received) < count:
                batches = await consumer.getmany(timeout_ms=500)
                received.extend(m.value or b"" for msgs in batches.values() for m in msgs)
        finally:
            await consumer.stop()
    return received


async def _partitions(client: dict[str, Any], topic: str) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(**client)
    async with asyncio.timeout(30):
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
    return list(described[0]["partitions"])


async def _wait_in_sync(client: dict[str, Any], topic: str, replicas: int) -> list[dict[str, Any]]:
    """Partitions of *topic* once each has *replicas* in-sync replicas (fails after 60 s)."""
    async with asyncio.timeout(60):
        while True:
            partitions = await _partitions(client, topic)
            if partitions and all(len(p["isr"]) == replicas for p in partitions):
                return partitions
            await asyncio.sleep(0.5)


async def _live_brokers(client: dict[str, Any]) -> set[int]:
    admin = AIOKafkaAdminClient(**client)
    async with asyncio.timeout(30):
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
    return {b["node_id"] for b in cluster["brokers"]}


# --------------------------------------------------------------------------- no JVM


def test_cluster_port_layout() -> None:
    assert [localkafka.node_port(19292, i) for i in (1, 2, 3)] == [19292, 19294, 19296]
    with pytest.raises(localkafka.LocalKafkaError, match="invalid node id"):
        localkafka.node_port(19292, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"brokers": 2}, "invalid broker count 2"),
        ({"brokers": 3, "controller_port": 20000}, "controller port can only be chosen"),
        ({"secure": True, "controller_port": 19002}, "clashes with the internal listener"),
    ],
)
def test_start_refuses_bad_shapes(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(localkafka.LocalKafkaError, match=message):
        localkafka.start(19000, home=tmp_path, **kwargs)


def test_cluster_needs_room_below_65536(tmp_path: Path) -> None:
    with pytest.raises(localkafka.LocalKafkaError, match="invalid port 65533"):
        localkafka.start(65533, brokers=3, home=tmp_path)


def test_urls() -> None:
    common: dict[str, Any] = {
        "running": True,
        "controller_port": 19193,
        "pid": 1,
        "run_dir": Path("/r"),
        "data_dir": Path("/r/data"),
        "log_file": Path("/r/logs/server.log"),
    }
    plain = BrokerStatus(port=19192, **common)
    assert plain.url == "kafka://127.0.0.1:19192"
    secure = BrokerStatus(
        port=19192,
        secure=True,
        ca_file=Path("/r/tls/ca.pem"),
        username="packetflow",
        password="s3cret",
        **common,
    )
    assert secure.url == (
        "kafka://packetflow@127.0.0.1:19192?security_protocol=SASL_SSL"
        "&sasl_mechanism=SCRAM-SHA-256&ssl_cafile=/r/tls/ca.pem"
    )
    assert "s3cret" not in repr(secure)


# --------------------------------------------------------------------------- secure broker


@pytest.mark.kafka
async def test_secure_round_trip_with_scram_user(secure_kafka: BrokerStatus) -> None:
    topic = await _create_topic(_sasl_ssl(secure_kafka), partitions=2, replicas=1)
    sent = [f"v{i}".encode() for i in range(20)]
    await _produce(_sasl_ssl(secure_kafka), topic, sent)
    # The other mechanism, with mutual TLS (the broker verifies a client cert when offered).
    client = _sasl_ssl(secure_kafka, mechanism="SCRAM-SHA-512", client_cert=True)
    assert sorted(await _consume(client, topic, len(sent))) == sorted(sent)


@pytest.mark.kafka
async def test_secure_wrong_password_is_refused(secure_kafka: BrokerStatus) -> None:
    client = _sasl_ssl(secure_kafka, password="not-the-password")
    async with asyncio.timeout(30):
        with pytest.raises(SaslAuthenticationFailed):
            await create_conn(
                localkafka.HOST,
                secure_kafka.port,
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-256",
                sasl_plain_username=secure_kafka.username,
                sasl_plain_password="not-the-password",
                ssl_context=client["ssl_context"],
            )
        producer = AIOKafkaProducer(**client)
        with pytest.raises(KafkaConnectionError):
            await producer.start()
        await producer.stop()


@pytest.mark.kafka
async def test_secure_port_refuses_plaintext(secure_kafka: BrokerStatus) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap, request_timeout_ms=5000)
    try:
        async with asyncio.timeout(30):
            with pytest.raises(KafkaConnectionError):
                await admin.start()
    finally:
        await admin.close()


@pytest.mark.kafka
def test_secure_status_and_files(secure_kafka: BrokerStatus) -> None:
    st = localkafka.status(secure_kafka.port)
    assert st.running and st.secure and st.username == "packetflow"
    assert st.ca_file == st.run_dir / "tls" / "ca.pem" and st.ca_file.is_file()
    assert st.credentials_file is not None
    assert st.password == json.loads(st.credentials_file.read_text())["packetflow"]
    for private in (st.credentials_file, st.client_key, st.run_dir / "tls" / "server.key"):
        assert private is not None
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert st.url == (
        f"kafka://packetflow@127.0.0.1:{st.port}?security_protocol=SASL_SSL"
        f"&sasl_mechanism=SCRAM-SHA-256&ssl_cafile={st.ca_file}"
    )
    assert st.password not in st.url

    runner = CliRunner()
    hidden = runner.invoke(kafka_cli.app, ["status", "--port", str(st.port)])
    assert hidden.exit_code == 0, hidden.output
    assert st.url in hidden.output and st.password not in hidden.output
    shown = runner.invoke(kafka_cli.app, ["status", "--port", str(st.port), "--show-password"])
    assert f"PACKETFLOW_KAFKA_PASSWORD={st.password}" in shown.output


@pytest.mark.kafka
def test_restarting_secure_broker_as_plaintext_is_refused(secure_kafka: BrokerStatus) -> None:
    with pytest.raises(localkafka.LocalKafkaError, match="holds a secure single-node broker"):
        localkafka.start(secure_kafka.port)


# --------------------------------------------------------------------------- cluster


@pytest.mark.kafka
async def test_cluster_reports_three_brokers(kafka_cluster: BrokerStatus) -> None:
    port = kafka_cluster.port
    assert kafka_cluster.brokers == 3
    assert kafka_cluster.bootstrap == ",".join(
        f"127.0.0.1:{localkafka.node_port(port, i)}" for i in (1, 2, 3)
    )
    assert await _live_brokers({"bootstrap_servers": kafka_cluster.bootstrap}) == {1, 2, 3}


@pytest.mark.kafka
async def test_cluster_topic_is_replicated_three_ways(kafka_cluster: BrokerStatus) -> None:
    client = {"bootstrap_servers": kafka_cluster.bootstrap}
    topic = await _create_topic(client, partitions=3, replicas=3)
    partitions = await _wait_in_sync(client, topic, replicas=3)
    assert len(partitions) == 3
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in partitions)


@pytest.mark.kafka
@pytest.mark.timeout(300)
async def test_cluster_keeps_acks_all_writes_with_one_node_down(
    kafka_cluster: BrokerStatus,
) -> None:
    port = kafka_cluster.port
    client = {"bootstrap_servers": kafka_cluster.bootstrap}
    topic = await _create_topic(client, partitions=2, replicas=3)
    partitions = await _wait_in_sync(client, topic, replicas=3)
    await _produce(client, topic, [b"before"])

    victim = next(p["leader"] for p in partitions if p["partition"] == 0)
    pid = await asyncio.to_thread(localkafka.kill_node, port, victim)
    try:
        assert localkafka.node_pid(port, victim) is None
        assert not localkafka.status(port).running
        # Two replicas left satisfy min.insync.replicas=2, so acks=all writes go through.
        await _produce(client, topic, [b"during-1", b"during-2"])
    finally:
        restarted = await asyncio.to_thread(localkafka.start_node, port, victim)

    assert restarted.running
    assert localkafka.node_pid(port, victim) not in (None, pid)
    assert await _live_brokers(client) == {1, 2, 3}
    await _wait_in_sync(client, topic, replicas=3)
    received = await _consume(client, topic, 3)
    assert sorted(received) == [b"before", b"during-1", b"during-2"]


def test_a_fresh_start_removes_the_storage_of_the_nodes_it_starts(tmp_path: Path) -> None:
    """``kafka start --fresh`` (what make test uses): no topics from earlier runs, whose
    partitions would pile up into the thousands of open files."""
    layout = plan(19992, tmp_path, brokers=3, secure=False, controller_port=None)
    for node in layout.nodes:
        (node.dir / "data" / "orders-0").mkdir(parents=True)
        (node.dir / "data" / "meta.properties").write_text("formatted\n")
        (node.dir / "server.properties").write_text("kept\n")
    wipe_storage(layout.nodes[:2])
    assert [(n.dir / "data").exists() for n in layout.nodes] == [False, False, True]
    assert all((n.dir / "server.properties").read_text() == "kept\n" for n in layout.nodes)
    wipe_storage(layout.nodes[:2])  # nothing left to remove: no error
