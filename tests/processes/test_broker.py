"""The broker side of the trust boundary, on real Kafka: set-aside copies that fit at the
broker's limit (or are kept truncated where a topic forbids it), a worker on a TLS +
SASL/SCRAM listener, the leader of a partition killed under load in a three-node cluster,
and a broker outage said once, with how long it lasted."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from support import crashproc
from support.running import new_topology, running, unique
from support.workerproc import (
    WORKER_KEY,
    WorkerProcess,
    cli,
    logs,
    new_namespace,
    orders_topology,
    topology_in,
)

from packetflow import Client, Context, Intent, issue_token, localkafka
from packetflow.engine.codec import TYPE_HEADER
from packetflow.engine.transport import BROKER_MAX_MESSAGE_BYTES
from topologies import orders

pytestmark = pytest.mark.kafka


class Item(Intent, type_name="broker.Item", key="key"):
    key: str
    n: int


def _topology(prefix: str) -> tuple[Any, str]:
    topo = new_topology(prefix)
    source = unique("items")

    @topo.reactor(Item, topic=source, public=True)
    def take(intent: Item, ctx: Context) -> None:
        return None

    return topo, source


async def test_a_set_aside_copy_of_a_record_at_the_brokers_limit_is_kept_whole(
    kafka_url: str,
) -> None:
    topo, source = _topology("limit")
    # bad JSON, as large as the source topic takes: the copy plus the reasons must still fit
    value = b'{"key": "k", "n": "' + b"x" * (BROKER_MAX_MESSAGE_BYTES - 4_000)
    async with running(topo, kafka_url) as run:
        await run.client.send_raw(source, value, key=b"k", headers=[(TYPE_HEADER, b"broker.Item")])
        (dead,) = await run.dead_letters(1)
        assert run.worker.metrics.truncated == 0
    assert dead.header("pf-reason") == "decode"
    assert dead.record.value == value  # byte for byte, over a megabyte with its headers
    assert dead.header("pf-truncated") is None


async def test_where_a_topic_forbids_it_the_copy_is_kept_truncated_with_its_digest(
    kafka_url: str, kafka_bootstrap: str
) -> None:
    topo, source = _topology("cramped")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # created small by someone else (a cluster policy, a careless operator)
        await admin.create_topics([NewTopic(topo.physical(topo.dead_letter_topic), 2, 1,
                                            topic_configs={"max.message.bytes": "100000"})])
    finally:
        await admin.close()
    value = b'{"key": "k", "n": "' + b"y" * 500_000
    async with running(topo, kafka_url) as run:
        await run.client.send_raw(source, value, key=b"k", headers=[(TYPE_HEADER, b"broker.Item")])
        (dead,) = await run.dead_letters(1)
        assert run.worker.metrics.truncated == 1
    assert dead.header("pf-reason") == "decode"
    assert dead.header("pf-truncated") == "true"
    assert dead.header("pf-original-size") == str(len(value))
    assert dead.header("pf-sha256") == hashlib.sha256(value).hexdigest()
    assert dead.record.value and value.startswith(dead.record.value)
    assert 50_000 < len(dead.record.value) < 100_000


async def test_a_worker_on_a_tls_and_scram_listener(
    secure_kafka: localkafka.BrokerStatus,
    spawn: Callable[..., WorkerProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert secure_kafka.password is not None
    url = secure_kafka.url
    assert "SASL_SSL" in url and secure_kafka.password not in url
    namespace = new_namespace()
    env = {"PACKETFLOW_KAFKA_PASSWORD": secure_kafka.password}
    worker = spawn("secure", namespace, url, env=env)
    await worker.wait_log(r"assigned .*accounts\[", timeout=60)
    monkeypatch.setenv("PACKETFLOW_KAFKA_PASSWORD", secure_kafka.password)
    teller = issue_token("teller-1", ["teller:account/*"], key=WORKER_KEY, ttl="1h")
    async with Client(url, orders_topology(namespace)) as client:
        await client.send(orders.Deposit(account="tls-1", amount=5),
                          context=Context.new(token=teller))
        (entry,) = await client.wait_for("ledger", 1, timeout=30)
    assert entry.intent == orders.Deposited(account="tls-1", amount=5, balance=5)
    assert secure_kafka.password not in worker.log()

    # a wrong password: one line, no traceback, and the password never shown
    wrong = cli("worker", "topologies.orders", "--broker",
                url.replace("packetflow@", "packetflow:not-the-password@"), namespace=namespace)
    assert wrong.returncode == 2, wrong.stderr
    assert "not-the-password" not in wrong.stderr and "Traceback" not in wrong.stderr
    assert re.search(r"error: cannot start worker on kafka://packetflow:\*\*\*@", wrong.stderr)


async def test_killing_a_partition_leaders_broker_under_load_loses_nothing(
    kafka_cluster: localkafka.BrokerStatus, spawn: Callable[..., WorkerProcess]
) -> None:
    url = kafka_cluster.url + "?replication_factor=3"
    namespace = new_namespace()
    topology = topology_in(namespace, crashproc.topology)
    worker = spawn("cluster", namespace, url, module="tests/support/crashproc.py",
                   args=["--instance-id", "cluster-1"])
    await worker.wait_log(r"assigned .*jobs\[", timeout=90)
    count, killed = 1500, None
    try:
        async with Client(url, topology) as client:
            for start in range(0, count, 100):
                if start == 500:
                    killed = await _kill_leader(kafka_cluster.port, topology.physical("jobs"))
                await client.send_many(crashproc.jobs(*range(start, start + 100)))
                await asyncio.sleep(0.1)
            deadline = time.monotonic() + 120
            while (done := await crashproc.done(client)) != set(range(count)):
                assert time.monotonic() < deadline, f"{count - len(done)} missing\n{logs([worker])}"
                await asyncio.sleep(0.5)
            outputs = await client.read("done")
    finally:
        if killed is not None:  # the cluster whole again for the other tests
            localkafka.start_node(kafka_cluster.port, killed)
    stamps = sorted(r.record.timestamp for r in outputs)
    pause = max(b - a for a, b in itertools.pairwise(stamps)) / 1000
    print(f"\nleader of jobs[0] (node {killed}) SIGKILLed under load: longest pause in the "
          f"outputs {pause:.1f}s, nothing lost ({count} of {count})")
    assert worker.proc.poll() is None  # it carried on by itself


async def _kill_leader(port: int, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        leader = next(p["leader"] for p in described["partitions"] if p["partition"] == 0)
    finally:
        await admin.close()
    localkafka.kill_node(port, leader)
    return int(leader)


OUTAGE_PORT = int(os.environ.get("PACKETFLOW_TEST_OUTAGE_PORT", "19492"))


async def test_a_broker_outage_is_said_once_and_its_end_with_how_long(
    spawn: Callable[..., WorkerProcess],
) -> None:
    broker = localkafka.start(OUTAGE_PORT)
    try:
        namespace = new_namespace()
        topology = topology_in(namespace, crashproc.topology)
        worker = spawn("outage", namespace, broker.url, module="tests/support/crashproc.py")
        await worker.wait_log(r"assigned .*jobs\[", timeout=60)
        localkafka.kill_node(OUTAGE_PORT, 1)  # SIGKILL: the broker's machine is gone
        down = time.monotonic()
        await worker.wait_log(r"unreachable", timeout=30)
        await asyncio.sleep(max(0.0, 6.0 - (time.monotonic() - down)))  # 6 s of outage
        localkafka.start(OUTAGE_PORT)
        found = await worker.wait_log(r"reachable again: resumed after ([0-9.]+)s", timeout=60)
        async with Client(broker.url, topology) as client:
            await client.send_many(crashproc.jobs(1))
            deadline = time.monotonic() + 60
            while 1 not in await crashproc.done(client):
                assert time.monotonic() < deadline, worker.log()
                await asyncio.sleep(0.2)
        text = worker.log()
    finally:
        localkafka.stop(OUTAGE_PORT)
    assert len(re.findall(r"packetflow\.worker: .*unreachable", text)) == 1, text
    assert float(found.group(1)) >= 5.0
    noise = len(re.findall(r" (ERROR|WARNING) aiokafka", text))
    print(f"\noutage of {float(found.group(1)):.1f}s: {noise} aiokafka lines logged")
    assert noise < 40, text  # unfiltered, aiokafka writes about 140 a second
    assert worker.proc.poll() is None


@pytest.mark.parametrize("client", ["aiokafka", "librdkafka"])
async def test_a_cancelled_wait_for_one_acknowledgement_leaves_the_batch_to_the_rest(
    kafka_url: str, client: str
) -> None:
    """A task awaiting one record's delivery is cancelled (a worker stopping its announcer
    mid-send): the record's batch is shared, so the flush after it must still see it
    acknowledged, not cancelled (it stopped a worker with exit 1 once)."""
    from packetflow.engine.transport import TopicSpec, open_transport

    transport = open_transport(f"{kafka_url}?client={client}")
    topic = unique("acks")
    await transport.start()
    try:
        await transport.ensure_topics([TopicSpec(topic, 1)])
        producer = transport.producer()
        await producer.start()
        try:
            ack = await producer.send(topic, b"a", b"k")
            waiter = asyncio.ensure_future(_delivered(ack))
            await asyncio.sleep(0)  # the waiter is on the batch's future now
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            await producer.flush()  # the batch went out: no CancelledError here
            second = await (await producer.send(topic, b"b", b"k"))
            assert second.offset == 1
        finally:
            await producer.stop()
    finally:
        await transport.stop()


async def _delivered(ack: Any) -> Any:
    return await ack
