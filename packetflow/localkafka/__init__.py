"""A local KRaft Apache Kafka broker, or three-node cluster, for development, tests and
benchmarks (``packetflow kafka``, the test session's fixtures, ``python -m benchmarks``).

The broker jars are fetched from Maven Central with ``mvn`` into
``$PACKETFLOW_HOME/kafka/<version>/lib`` and every node runs as a detached ``java``
process whose state (config, data, logs, pidfile) lives in
``$PACKETFLOW_HOME/kafka/run-<port>/`` (``run-<port>/node-<i>/`` for a cluster).
Only 127.0.0.1 is ever bound. Every node is a combined broker+controller.

Port layout for base port P:

* single node: clients on P, controller on P+1;
* ``brokers=3``: node i (1..3) takes clients on P+2(i-1) and its controller on the next
  port, i.e. clients on P, P+2, P+4 and controllers on P+1, P+3, P+5;
* ``secure=True``: the client listener is SASL_SSL (SCRAM-SHA-256 and SCRAM-SHA-512 over
  TLS) and inter-broker traffic gets its own unauthenticated PLAINTEXT listener, on P+2
  for a single node and on P+6, P+7, P+8 for a cluster. Like the PLAINTEXT controller
  listener it is bound to 127.0.0.1 only.

A secure run dir holds ``tls/`` with ``ca.pem`` (a self-signed CA), ``server.pem`` and
``server.key`` (for IP 127.0.0.1 and DNS localhost), ``client.pem`` and ``client.key``
(signed by the same CA), and ``credentials.json`` with the random SCRAM passwords of the
users ``admin`` and ``packetflow``; keys, credentials and the broker config are mode 0600.
The broker uses ``ssl.client.auth=requested``: a client certificate is verified against
the CA when presented (mutual TLS) but not required, as SCRAM already authenticates.

A run dir records its shape (nodes, secure or not) in ``layout.json``; starting it again
with another shape is refused rather than silently reconfiguring its data.

Start reading at ``broker.py`` (:func:`start`, :func:`stop`, :func:`status`). Below it,
each module importing only those after it in this list: ``probe.py`` (is a node serving),
``config.py`` (a node's files and storage), ``install.py`` (the jars via Maven, and java),
``security.py`` (SCRAM users, TLS material), ``_process.py`` (running commands, locks, log
tails) and ``layout.py`` (constants, errors, status records, paths, the run dir's layout).

May import: the standard library, ``cryptography`` (certificates), ``aiokafka`` (only to
probe a broker, imported when a probe runs) and ``packetflow.engine.paths`` (where
``$PACKETFLOW_HOME`` is); nothing of ``packetflow.cli``, ``packetflow.streams`` or other
substrates. What this face re-exports is what the CLI, tests and benchmarks use.
"""

from __future__ import annotations

from packetflow.localkafka.broker import kill_node, node_pid, start, start_node, status, stop
from packetflow.localkafka.install import fetch, install_dir, is_fetched
from packetflow.localkafka.layout import (
    ADMIN_USER,
    CLIENT_USER,
    CLUSTER_SIZE,
    DEFAULT_PORT,
    HOST,
    KAFKA_VERSION,
    MIN_JAVA_MAJOR,
    PASSWORD_ENV,
    SCALA_VERSION,
    SCRAM_MECHANISMS,
    BrokerStatus,
    LocalKafkaError,
    NodeStatus,
    node_port,
    packetflow_home,
    run_dir,
)

__all__ = [
    "ADMIN_USER",
    "CLIENT_USER",
    "CLUSTER_SIZE",
    "DEFAULT_PORT",
    "HOST",
    "KAFKA_VERSION",
    "MIN_JAVA_MAJOR",
    "PASSWORD_ENV",
    "SCALA_VERSION",
    "SCRAM_MECHANISMS",
    "BrokerStatus",
    "LocalKafkaError",
    "NodeStatus",
    "fetch",
    "install_dir",
    "is_fetched",
    "kill_node",
    "node_pid",
    "node_port",
    "packetflow_home",
    "run_dir",
    "start",
    "start_node",
    "status",
    "stop",
]
