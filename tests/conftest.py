"""Shared pytest fixtures for PacketFlow."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from support.workerproc import WorkerProcess

# Workers in this process find their keys in a directory of the session's own (never the
# user's ~/.cache/packetflow/keys): no token key, only a worker secret, which workers on
# kafka:// need to seal what the engine emits (replies, internal intents).
_KEYS = tempfile.TemporaryDirectory(prefix="pf-session-keys-")
os.environ["PACKETFLOW_KEYS"] = _KEYS.name


def _session_secret() -> None:
    from packetflow import KeyStore

    KeyStore(_KEYS.name).write_secret()


_session_secret()

# ---------------------------------------------------------------------------
# Kafka broker fixtures
#
# ``kafka_bootstrap`` resolves a real broker, in order of preference:
#   1. $PACKETFLOW_TEST_BOOTSTRAP ("host:port" or "kafka://host:port"),
#   2. a testcontainers Kafka (only if testcontainers is installed and Docker answers),
#   3. the local KRaft broker from packetflow.localkafka on
#      $PACKETFLOW_TEST_KAFKA_PORT (default 19092), stopped at session end only
#      if this fixture started it.
# If none works the Kafka tests are skipped locally but fail hard when $CI is set.
# ---------------------------------------------------------------------------

_LOCAL_PORT = int(os.environ.get("PACKETFLOW_TEST_KAFKA_PORT", "19092"))


def _no_broker(reasons: list[str]) -> None:
    msg = "no Kafka broker for tests: " + "; ".join(reasons)
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI is set: Kafka tests are never skipped in CI)", pytrace=False)
    pytest.skip(msg)


def _docker_answers() -> bool:
    if importlib.util.find_spec("testcontainers") is None:
        return False
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a real Kafka broker for the whole test session."""
    env = os.environ.get("PACKETFLOW_TEST_BOOTSTRAP", "").strip()
    if env:
        yield env.removeprefix("kafka://")
        return

    reasons: list[str] = []
    if _docker_answers():
        try:
            from testcontainers.kafka import KafkaContainer

            container = KafkaContainer().with_kraft()
            container.start()
        except Exception as exc:
            reasons.append(f"testcontainers Kafka failed: {exc!r}")
        else:
            try:
                yield str(container.get_bootstrap_server())
            finally:
                container.stop()
            return
    else:
        reasons.append("testcontainers/Docker unavailable")

    from packetflow import localkafka

    broker: localkafka.BrokerStatus | None = None
    try:
        broker = localkafka.start(_LOCAL_PORT, fresh=True)
    except Exception as exc:
        reasons.append(f"local broker on port {_LOCAL_PORT} failed: {exc}")
    if broker is None:
        _no_broker(reasons)
        return
    try:
        yield broker.bootstrap
    finally:
        if not broker.already_running:
            localkafka.stop(_LOCAL_PORT)


@pytest.fixture(scope="session")
def kafka_url(kafka_bootstrap: str) -> str:
    """``kafka://host:port`` URL of the session broker."""
    return f"kafka://{kafka_bootstrap}"


# ---------------------------------------------------------------------------
# (other shared fixtures go below this line)
# ---------------------------------------------------------------------------


from packetflow.engine.transport import DEFAULT_KAFKA_CLIENT, KAFKA_CLIENTS  # noqa: E402

# The Kafka client other than the default, which the tests that take ``broker`` run on too.
_OTHER_CLIENT = next(c for c in KAFKA_CLIENTS if c != DEFAULT_KAFKA_CLIENT)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param(f"kafka-{_OTHER_CLIENT}", marks=pytest.mark.kafka),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """A broker URL, for the tests that run on every transport: a fresh ``memory://``
    broker (named after the test module), or the session's real Kafka through the default
    client (``kafka``) and through the other (``kafka-<client>``)."""
    if request.param == "kafka":
        yield request.getfixturevalue("kafka_url")
        return
    if request.param.startswith("kafka-"):
        client = request.param.removeprefix("kafka-")
        yield f"{request.getfixturevalue('kafka_url')}?client={client}"
        return
    from packetflow.engine.transport.memory import reset_memory_brokers

    name = request.module.__name__.removeprefix("test_")
    yield f"memory://{name}-{uuid.uuid4().hex[:12]}"
    reset_memory_brokers()


@pytest.fixture
def spawn(tmp_path: Path, kafka_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """``spawn(name, namespace[, url], module=, args=, env=)`` starts a worker process
    (tests/support/workerproc.py) logging into ``tmp_path``; all are killed at teardown."""
    from support.workerproc import WorkerProcess

    started: list[WorkerProcess] = []

    def start(name: str, namespace: str, url: str = kafka_url, **kw: Any) -> WorkerProcess:
        worker = WorkerProcess(name, namespace, url, tmp_path, **kw)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


# ---------------------------------------------------------------------------
# Local Kafka variants from packetflow.localkafka, started on first use and stopped
# at session end only if the fixture started them (in $PACKETFLOW_HOME like the broker
# above; skipped locally but failing under $CI when they cannot start):
#   secure_kafka   a SASL_SSL (SCRAM) broker on $PACKETFLOW_TEST_SECURE_PORT (19192),
#   kafka_cluster  a 3-node cluster on base port $PACKETFLOW_TEST_CLUSTER_PORT (19292).
# ---------------------------------------------------------------------------

if TYPE_CHECKING:
    from packetflow.localkafka import BrokerStatus

_SECURE_PORT = int(os.environ.get("PACKETFLOW_TEST_SECURE_PORT", "19192"))
_CLUSTER_PORT = int(os.environ.get("PACKETFLOW_TEST_CLUSTER_PORT", "19292"))


def _local_kafka(what: str, port: int, **kwargs: Any) -> Iterator[BrokerStatus]:
    from packetflow import localkafka

    try:
        broker = localkafka.start(port, fresh=True, **kwargs)
    except Exception as exc:
        _no_broker([f"local {what} on port {port} failed: {exc}"])
        return
    try:
        yield broker
    finally:
        if not broker.already_running:
            localkafka.stop(port)


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[BrokerStatus]:
    """Status of a local broker whose client listener is SASL_SSL (SCRAM users, own CA)."""
    yield from _local_kafka("secure Kafka", _SECURE_PORT, secure=True)


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[BrokerStatus]:
    """Status of a local 3-node KRaft cluster (RF 3, min.insync.replicas 2)."""
    yield from _local_kafka("Kafka cluster", _CLUSTER_PORT, brokers=3)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the secure broker or the three-node cluster run last: once started, their
    JVMs live to the end of the session, and would slow every test after them on two cores."""
    heavy = {"secure_kafka", "kafka_cluster"}
    items.sort(key=lambda item: bool(heavy & set(getattr(item, "fixturenames", ()))))
