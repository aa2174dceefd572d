"""What a local broker is and where it lives: versions, names, ports, run dirs, layouts.

The constants (Kafka version, default port, cluster size, SCRAM users), the user-facing
:class:`LocalKafkaError`, the status records ``broker.status`` returns, the paths of
``$PACKETFLOW_HOME/kafka/run-<port>/``, and the run dir's layout: which nodes listen on
which ports (:func:`plan`, following the port layout in the package doc), recorded in
``layout.json`` and checked before a start (:func:`check_compatible`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from urllib.parse import quote

from packetflow.engine import paths

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
DEFAULT_PORT = 9092
HOST = "127.0.0.1"
MIN_JAVA_MAJOR = 17

#: Number of nodes of a local cluster (``brokers=CLUSTER_SIZE``).
CLUSTER_SIZE = 3
#: SCRAM mechanisms a secure broker accepts; the first is the one PacketFlow URLs name.
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
#: SCRAM users created on a secure broker: ``admin`` for tooling, ``packetflow`` for apps.
ADMIN_USER = "admin"
CLIENT_USER = "packetflow"
#: Environment variable the engine reads the SCRAM password from (if the URL has none).
PASSWORD_ENV = "PACKETFLOW_KAFKA_PASSWORD"


class LocalKafkaError(RuntimeError):
    """A user-facing failure managing the local broker (message is a single line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")).strip())


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    """State of one broker+controller node (one JVM)."""

    node_id: int
    running: bool
    port: int
    controller_port: int
    #: PLAINTEXT inter-broker listener of a secure broker (None when not secure).
    internal_port: int | None
    pid: int | None
    run_dir: Path
    data_dir: Path
    log_file: Path

    @property
    def bootstrap(self) -> str:
        """``host:port`` of this node's client listener."""
        return f"{HOST}:{self.port}"


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    """State of the local broker (or cluster) on one base port.

    For a cluster, ``running`` means every node runs, and ``controller_port``, ``pid``,
    ``data_dir`` and ``log_file`` are node 1's; ``nodes`` has them all.
    """

    running: bool
    port: int
    controller_port: int
    pid: int | None
    run_dir: Path
    data_dir: Path
    log_file: Path
    version: str = KAFKA_VERSION
    already_running: bool = False
    #: Number of nodes (1, or CLUSTER_SIZE for a cluster).
    brokers: int = 1
    nodes: tuple[NodeStatus, ...] = ()
    #: True if clients must use SASL_SSL with SCRAM; the fields below are then set.
    secure: bool = False
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    credentials_file: Path | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` bootstrap address (every node's, comma-separated, for a cluster)."""
        if len(self.nodes) > 1:
            return ",".join(node.bootstrap for node in self.nodes)
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """PacketFlow ``kafka://`` URL of :attr:`bootstrap`, never with the password.

        Plaintext: ``kafka://BOOTSTRAP``. Secure: ``kafka://packetflow@BOOTSTRAP?QUERY`` with
        QUERY ``security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-256&ssl_cafile=/abs/ca.pem``;
        the engine then takes the password from ``$PACKETFLOW_KAFKA_PASSWORD``.
        """
        if not self.secure:
            return f"kafka://{self.bootstrap}"
        return (
            f"kafka://{self.username}@{self.bootstrap}?security_protocol=SASL_SSL"
            f"&sasl_mechanism={SCRAM_MECHANISMS[0]}&ssl_cafile={quote(str(self.ca_file), safe='/')}"
        )


# --------------------------------------------------------------------------- paths


def packetflow_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the PacketFlow cache dir: *home*, else ``$PACKETFLOW_HOME``, else ~/.cache."""
    if home is not None:
        return Path(home).expanduser().resolve()
    return paths.packetflow_home().resolve()


def run_dir(port: int = DEFAULT_PORT, home: str | os.PathLike[str] | None = None) -> Path:
    """Per-port runtime directory (config, data, logs, pidfile; one subdir per cluster node)."""
    return packetflow_home(home) / "kafka" / f"run-{port}"


def node_port(port: int, node_id: int) -> int:
    """Client port of node *node_id* (1..CLUSTER_SIZE) of the cluster on base *port*."""
    if not 1 <= node_id <= CLUSTER_SIZE:
        raise LocalKafkaError(f"invalid node id {node_id}: must be in 1..{CLUSTER_SIZE}")
    return port + 2 * (node_id - 1)


def pid_file(ndir: Path) -> Path:
    return ndir / "kafka.pid"


def server_log(ndir: Path) -> Path:
    return ndir / "logs" / "server.log"


def console_log(ndir: Path) -> Path:
    return ndir / "kafka.out"


def tls_dir(rdir: Path) -> Path:
    return rdir / "tls"


def credentials_file(rdir: Path) -> Path:
    return rdir / "credentials.json"


def _layout_file(rdir: Path) -> Path:
    return rdir / "layout.json"


def validate_port(port: int, what: str = "port") -> None:
    """Refuse a *port* outside 1..65535 (*what* names it in the message)."""
    if not 1 <= port <= 65535:
        raise LocalKafkaError(f"invalid {what} {port}: must be in 1..65535")


# --------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class Node:
    """Where one broker+controller node listens and keeps its files."""

    node_id: int
    port: int
    controller_port: int
    internal_port: int | None
    dir: Path

    def listeners(self) -> list[tuple[int, str]]:
        """(port, what) of every listener, for error messages."""
        found = [(self.port, "port"), (self.controller_port, "controller port")]
        if self.internal_port is not None:
            found.append((self.internal_port, "internal listener port"))
        return found


@dataclasses.dataclass(frozen=True)
class Layout:
    """The shape of one run dir: how many nodes, whether secure, and their ports and dirs."""

    port: int
    rdir: Path
    brokers: int
    secure: bool
    nodes: tuple[Node, ...]

    def node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise LocalKafkaError(
            f"invalid node id {node_id}: {self.rdir} has nodes 1..{len(self.nodes)}"
        )

    def describe(self) -> str:
        kind = "single-node broker" if self.brokers == 1 else f"{self.brokers}-node cluster"
        return f"a {'secure' if self.secure else 'plaintext'} {kind}"

    def flags(self) -> str:
        """How ``packetflow kafka start`` selects this shape, e.g. ``with --secure``."""
        flags = ["--secure"] if self.secure else []
        if self.brokers != 1:
            flags.append(f"--brokers {self.brokers}")
        return f"with {' '.join(flags)}" if flags else "without --secure or --brokers"


def plan(
    port: int, rdir: Path, *, brokers: int, secure: bool, controller_port: int | None
) -> Layout:
    """The layout :func:`start` sets up for these arguments (validated; see the package doc)."""
    validate_port(port)
    if brokers not in (1, CLUSTER_SIZE):
        raise LocalKafkaError(f"invalid broker count {brokers}: must be 1 or {CLUSTER_SIZE}")
    if controller_port is not None:
        if brokers != 1:
            raise LocalKafkaError("a controller port can only be chosen for a single node")
        validate_port(controller_port, "controller port")
        if controller_port == port:
            raise LocalKafkaError(f"controller port must differ from broker port {port}")
    nodes = tuple(
        Node(
            node_id=i,
            port=node_port(port, i),
            controller_port=(
                controller_port if controller_port is not None else node_port(port, i) + 1
            ),
            internal_port=port + 2 * brokers + i - 1 if secure else None,
            dir=_node_dir(rdir, i, brokers),
        )
        for i in range(1, brokers + 1)
    )
    layout = Layout(port, rdir, brokers, secure, nodes)
    used = [p for node in nodes for p, _ in node.listeners()]
    if max(used) > 65535:
        raise LocalKafkaError(
            f"invalid port {port}: {layout.describe()} needs ports up to {max(used)} (> 65535)"
        )
    if len(set(used)) != len(used):
        raise LocalKafkaError(
            f"controller port {controller_port} clashes with the internal listener on "
            f"{port + 2}; pick another"
        )
    return layout


def _node_dir(rdir: Path, node_id: int, brokers: int) -> Path:
    return rdir if brokers == 1 else rdir / f"node-{node_id}"


def save_layout(layout: Layout) -> None:
    """Record *layout* in its run dir's ``layout.json``."""
    nodes = [
        {
            "node_id": n.node_id,
            "port": n.port,
            "controller_port": n.controller_port,
            "internal_port": n.internal_port,
        }
        for n in layout.nodes
    ]
    record = {"brokers": layout.brokers, "secure": layout.secure, "nodes": nodes}
    _layout_file(layout.rdir).write_text(json.dumps(record, indent=2) + "\n")


def _load_layout(port: int, rdir: Path) -> Layout | None:
    """The layout recorded in *rdir*, or None if it has none."""
    path = _layout_file(rdir)
    try:
        record = json.loads(path.read_text())
        brokers = int(record["brokers"])
        nodes = tuple(
            Node(
                node_id=int(n["node_id"]),
                port=int(n["port"]),
                controller_port=int(n["controller_port"]),
                internal_port=None if n["internal_port"] is None else int(n["internal_port"]),
                dir=_node_dir(rdir, int(n["node_id"]), brokers),
            )
            for n in record["nodes"]
        )
        return Layout(port, rdir, brokers, bool(record["secure"]), nodes)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocalKafkaError(
            f"cannot read {path} ({exc!r}); stop the broker and delete {rdir} to start afresh"
        ) from exc


def current_layout(port: int, rdir: Path) -> Layout:
    """The recorded layout, else that of a plaintext single node (run dirs from before
    ``layout.json``, and never-started ports)."""
    layout = _load_layout(port, rdir)
    if layout is not None:
        return layout
    try:
        cport = int((rdir / "controller.port").read_text().strip())
    except (OSError, ValueError):
        cport = port + 1
    return Layout(port, rdir, 1, False, (Node(1, port, cport, None, rdir),))


def check_compatible(want: Layout) -> None:
    """Refuse to start *want* in a run dir set up for another shape of broker."""
    have = _load_layout(want.port, want.rdir)
    if have is None and is_formatted(want.rdir):
        have = current_layout(want.port, want.rdir)
    if have is not None and (have.brokers, have.secure) != (want.brokers, want.secure):
        raise LocalKafkaError(
            f"{want.rdir} holds {have.describe()}, not {want.describe()}: start it "
            f"{have.flags()}, or stop it and delete {want.rdir}, or use another --port"
        )


def is_formatted(ndir: Path) -> bool:
    """True if the node in *ndir* has formatted KRaft storage (done before its first start)."""
    return (ndir / "data" / "meta.properties").is_file()
