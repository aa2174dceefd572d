"""Manage a local KRaft Apache Kafka broker, or three-node cluster, for development and tests.

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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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

#: Maven coordinates (groupId, artifactId, version) of the broker runtime.
ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    ("org.slf4j", "slf4j-api", "2.0.17"),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.24.3"),
    ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
)

Progress = Callable[[str], None]
_T = TypeVar("_T")


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


def install_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding the pom.xml and ``lib/`` jars for this Kafka version."""
    return packetflow_home(home) / "kafka" / KAFKA_VERSION


def run_dir(port: int = DEFAULT_PORT, home: str | os.PathLike[str] | None = None) -> Path:
    """Per-port runtime directory (config, data, logs, pidfile; one subdir per cluster node)."""
    return packetflow_home(home) / "kafka" / f"run-{port}"


def node_port(port: int, node_id: int) -> int:
    """Client port of node *node_id* (1..CLUSTER_SIZE) of the cluster on base *port*."""
    if not 1 <= node_id <= CLUSTER_SIZE:
        raise LocalKafkaError(f"invalid node id {node_id}: must be in 1..{CLUSTER_SIZE}")
    return port + 2 * (node_id - 1)


def _lib_dir(home: str | os.PathLike[str] | None) -> Path:
    return install_dir(home) / "lib"


def _marker(home: str | os.PathLike[str] | None) -> Path:
    return install_dir(home) / ".fetched"


def _pidfile(ndir: Path) -> Path:
    return ndir / "kafka.pid"


def _server_log(ndir: Path) -> Path:
    return ndir / "logs" / "server.log"


def _console_log(ndir: Path) -> Path:
    return ndir / "kafka.out"


def _tls_dir(rdir: Path) -> Path:
    return rdir / "tls"


def _credentials_file(rdir: Path) -> Path:
    return rdir / "credentials.json"


def _layout_file(rdir: Path) -> Path:
    return rdir / "layout.json"


# --------------------------------------------------------------------------- helpers


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on *path* (serialises concurrent fetch/start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 8) -> str:
    """Last non-empty *lines* of a text file joined with `` | `` (empty if unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return _tail_text(text, lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MVN_NOISE = re.compile(
    r"-e switch|-X switch|For more information about the errors|^\[ERROR\] \[Help \d+\]|"
    r"cwiki\.apache\.org|^\[ERROR\]\s*$|^\[ERROR\] After correcting the problems|"
    r"^\[ERROR\] mvn <args> -rf"
)
_STACK = re.compile(r"^\s+(at |\.\.\. \d+ more)")
_ERRORISH = re.compile(r"\b(ERROR|FATAL)\b|Exception|Error:")


def _tail_text(text: str, lines: int = 8) -> str:
    """Summarise the end of a log as one line joined with `` | ``.

    Drops Java stack frames and Maven boilerplate; if any lines mention an error or
    exception, only the last of those are kept.
    """
    kept = [
        re.sub(r"\s*-> \[Help \d+\]$", "", ln.strip())[:400]
        for ln in _ANSI.sub("", text).splitlines()
        if ln.strip() and not _MVN_NOISE.search(ln.strip()) and not _STACK.match(ln)
    ]
    errors = [ln for ln in kept if _ERRORISH.search(ln)]
    return " | ".join((errors or kept)[-lines:])


def _validate_port(port: int, what: str = "port") -> None:
    if not 1 <= port <= 65535:
        raise LocalKafkaError(f"invalid {what} {port}: must be in 1..65535")


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise LocalKafkaError(
            f"java not found on PATH (Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR}+); "
            "install a JDK/JRE or set JAVA_HOME"
        )
    return found


def _run(cmd: list[str], cwd: Path, timeout: float, timeout_message: str) -> tuple[int, str]:
    """Run ``cmd`` in ``cwd`` without stdin; its exit status and stdout + stderr.

    Raises :class:`LocalKafkaError` with ``timeout_message`` when it outlives ``timeout``.
    """
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(timeout_message) from exc
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def _check_java_version(java: str) -> None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalKafkaError(f"cannot run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return  # unknown format; let the JVM complain later if it must
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_x" style
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise LocalKafkaError(
            f"Java {major} found at {java}, but Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR}+"
        )


def _pid_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (reaps it if it is our child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()
    return not (state and state[0] in ("Z", "X"))


def _is_our_broker(pid: int, ndir: Path) -> bool:
    """Best-effort check that *pid* is the Kafka JVM started for *ndir* (guards pid reuse)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return True  # no procfs: trust the pidfile
    return "kafka.Kafka" in args and str(ndir / "server.properties") in args


def _read_pid(ndir: Path) -> int | None:
    """Pid from the pidfile if that process is alive and is our broker; clears stale files."""
    pidfile = _pidfile(ndir)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and _is_our_broker(pid, ndir):
        return pid
    with contextlib.suppress(OSError):
        pidfile.unlink()
    return None


def _port_accepts(port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:*port*."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(port: int) -> bool:
    """True if 127.0.0.1:*port* can be bound (i.e. nobody is listening on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _run_in_thread(fn: Callable[[], _T], default: _T) -> _T:
    """Run *fn* in a fresh thread (safe even when the caller has a running event loop);
    *default* if it raises or takes over 30 s."""
    result: list[_T] = []

    def target() -> None:
        try:
            result.append(fn())
        except Exception:
            result.append(default)

    thread = threading.Thread(target=target, name="localkafka-probe", daemon=True)
    thread.start()
    thread.join(30.0)
    return result[0] if result else default


def _sasl_ssl_config(ca_file: Path, username: str, password: str) -> dict[str, Any]:
    """aiokafka client settings for a secure broker (SCRAM-SHA-256 over TLS)."""
    from aiokafka.helpers import create_ssl_context

    return {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": SCRAM_MECHANISMS[0],
        "sasl_plain_username": username,
        "sasl_plain_password": password,
        "ssl_context": create_ssl_context(cafile=str(ca_file)),
    }


def _probe_brokers(
    bootstrap: str, client: Mapping[str, Any], timeout_ms: int = 5000
) -> frozenset[int]:
    """Node ids of the live brokers a metadata request via *bootstrap* reports (empty if
    nobody answers); *client* holds extra aiokafka settings, e.g. SASL_SSL."""

    async def probe() -> frozenset[int]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            client_id="packetflow-localkafka-probe",
            **client,
        )
        try:
            await asyncio.wait_for(admin.start(), timeout_ms / 1000)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_ms / 1000)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return frozenset(int(b["node_id"]) for b in cluster.get("brokers") or ())

    return _run_in_thread(lambda: asyncio.run(probe()), frozenset())


def _random_cluster_id() -> str:
    """A Kafka-style cluster id: url-safe base64 of a random UUID, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------------------- fetch

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by packetflow.cli.localkafka; used only to fetch the Kafka broker jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>packetflow</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _pom_xml() -> str:
    deps = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
        "<version>{}</version></dependency>".format(*art)
        for art in ARTIFACTS
    )
    return _POM.format(kafka_version=KAFKA_VERSION, dependencies=deps)


def is_fetched(home: str | os.PathLike[str] | None = None) -> bool:
    """True if the broker jars for this version are already in the cache."""
    lib = _lib_dir(home)
    return (
        _marker(home).is_file() and (lib / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").is_file()
    )


def fetch(
    home: str | os.PathLike[str] | None = None,
    *,
    progress: Progress | None = None,
    timeout: float = 1800.0,
) -> Path:
    """Download the Kafka broker jars with Maven (skipped when cached); return the lib dir."""
    idir = install_dir(home)
    lib = _lib_dir(home)
    if is_fetched(home):
        return lib
    with _locked(idir / ".lock"):
        if is_fetched(home):
            return lib
        mvn = shutil.which("mvn")
        if not mvn:
            raise LocalKafkaError(
                f"mvn not found on PATH; Apache Maven is needed once to fetch Kafka "
                f"{KAFKA_VERSION} from Maven Central into {idir}"
            )
        _java()
        _say(progress, f"Fetching Apache Kafka {KAFKA_VERSION} jars with Maven into {lib}")
        (idir / "pom.xml").write_text(_pom_xml())
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DoutputDirectory=lib",
            "-DincludeScope=runtime",
        ]
        returncode, output = _run(
            cmd, idir, timeout, f"mvn timed out after {timeout:.0f}s fetching Kafka jars"
        )
        output = _ANSI.sub("", output)
        (idir / "mvn.log").write_text(output)
        if returncode != 0:
            raise LocalKafkaError(
                f"mvn failed (exit {returncode}) fetching Kafka {KAFKA_VERSION}; "
                f"full log in {idir / 'mvn.log'}: {_tail_text(output, 3) or 'no output'}"
            )
        if not (lib / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").is_file():
            raise LocalKafkaError(
                f"mvn succeeded but {lib} has no Kafka jar; see {idir / 'mvn.log'}"
            )
        _marker(home).write_text("\n".join(":".join(a) for a in ARTIFACTS) + "\n")
    return lib


# --------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class _Node:
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
class _Layout:
    """The shape of one run dir: how many nodes, whether secure, and their ports and dirs."""

    port: int
    rdir: Path
    brokers: int
    secure: bool
    nodes: tuple[_Node, ...]

    def node(self, node_id: int) -> _Node:
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


def _plan(
    port: int, rdir: Path, *, brokers: int, secure: bool, controller_port: int | None
) -> _Layout:
    """The layout :func:`start` sets up for these arguments (validated; see module doc)."""
    _validate_port(port)
    if brokers not in (1, CLUSTER_SIZE):
        raise LocalKafkaError(f"invalid broker count {brokers}: must be 1 or {CLUSTER_SIZE}")
    if controller_port is not None:
        if brokers != 1:
            raise LocalKafkaError("a controller port can only be chosen for a single node")
        _validate_port(controller_port, "controller port")
        if controller_port == port:
            raise LocalKafkaError(f"controller port must differ from broker port {port}")
    nodes = tuple(
        _Node(
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
    layout = _Layout(port, rdir, brokers, secure, nodes)
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


def _save_layout(layout: _Layout) -> None:
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


def _load_layout(port: int, rdir: Path) -> _Layout | None:
    """The layout recorded in *rdir*, or None if it has none."""
    path = _layout_file(rdir)
    try:
        record = json.loads(path.read_text())
        brokers = int(record["brokers"])
        nodes = tuple(
            _Node(
                node_id=int(n["node_id"]),
                port=int(n["port"]),
                controller_port=int(n["controller_port"]),
                internal_port=None if n["internal_port"] is None else int(n["internal_port"]),
                dir=_node_dir(rdir, int(n["node_id"]), brokers),
            )
            for n in record["nodes"]
        )
        return _Layout(port, rdir, brokers, bool(record["secure"]), nodes)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LocalKafkaError(
            f"cannot read {path} ({exc!r}); stop the broker and delete {rdir} to start afresh"
        ) from exc


def _current_layout(port: int, rdir: Path) -> _Layout:
    """The recorded layout, else that of a plaintext single node (run dirs from before
    ``layout.json``, and never-started ports)."""
    layout = _load_layout(port, rdir)
    if layout is not None:
        return layout
    try:
        cport = int((rdir / "controller.port").read_text().strip())
    except (OSError, ValueError):
        cport = port + 1
    return _Layout(port, rdir, 1, False, (_Node(1, port, cport, None, rdir),))


def _check_compatible(want: _Layout) -> None:
    """Refuse to start *want* in a run dir set up for another shape of broker."""
    have = _load_layout(want.port, want.rdir)
    if have is None and _is_formatted(want.rdir):
        have = _current_layout(want.port, want.rdir)
    if have is not None and (have.brokers, have.secure) != (want.brokers, want.secure):
        raise LocalKafkaError(
            f"{want.rdir} holds {have.describe()}, not {want.describe()}: start it "
            f"{have.flags()}, or stop it and delete {want.rdir}, or use another --port"
        )


def _is_formatted(ndir: Path) -> bool:
    return (ndir / "data" / "meta.properties").is_file()


# --------------------------------------------------------------------------- config


def _server_properties(layout: _Layout, node: _Node) -> str:
    data = node.dir / "data"
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in layout.nodes)
    replicas = layout.brokers
    min_isr = 1 if replicas == 1 else 2
    cluster = (
        ""
        if layout.brokers == 1
        else """
# Fence a dead node within seconds, so acks=all writes resume quickly after a failure.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
"""
    )
    return f"""# Generated by packetflow.cli.localkafka -- {layout.describe()}, node {node.node_id}.
process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={voters}
{_listener_properties(layout, node)}
log.dirs={data}
metadata.log.dir={data}

num.partitions=4
default.replication.factor={replicas}
min.insync.replicas={min_isr}
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
{cluster}
# Keep a dev box's disk in check.
log.retention.hours=24
log.retention.bytes=1073741824
log.segment.bytes=104857600
log.retention.check.interval.ms=60000

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
socket.request.max.bytes=104857600
"""


def _listener_properties(layout: _Layout, node: _Node) -> str:
    """Listener settings: all PLAINTEXT, or SASL_SSL for clients when secure."""
    if not layout.secure:
        return f"""listeners=PLAINTEXT://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{node.port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"""
    tls = _tls_dir(layout.rdir)
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    chain = (tls / "server.pem").read_text() + (tls / "ca.pem").read_text()
    return "\n".join(
        [
            f"listeners=SASL_SSL://{HOST}:{node.port},CONTROLLER://{HOST}:{node.controller_port},"
            f"INTERNAL://{HOST}:{node.internal_port}",
            f"advertised.listeners=SASL_SSL://{HOST}:{node.port},"
            f"INTERNAL://{HOST}:{node.internal_port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=INTERNAL",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT,"
            "INTERNAL:PLAINTEXT",
            f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)}",
            *(
                f"listener.name.sasl_ssl.{mech.lower()}.sasl.jaas.config={jaas}"
                for mech in SCRAM_MECHANISMS
            ),
            # Only the listener-prefixed form applies to a SASL_SSL listener.
            "listener.name.sasl_ssl.ssl.client.auth=requested",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls / 'ca.pem'}",
            "ssl.keystore.type=PEM",
            # Inline, because a PEM keystore *file* must hold an encrypted key, and Java 17
            # cannot decrypt the PBES2 keys `cryptography` writes (this file is 0600).
            _pem_property("ssl.keystore.certificate.chain", chain),
            _pem_property("ssl.keystore.key", (tls / "server.key").read_text()),
        ]
    )


def _pem_property(name: str, pem: str) -> str:
    """``name=pem`` for a .properties file: ``\\n`` escapes keep the PEM's line breaks
    (Kafka's PEM parser needs them) and continuation lines keep it readable."""
    return f"{name}=" + "\\n\\\n".join(pem.strip().splitlines())


def _log4j2_properties(rdir: Path) -> str:
    log = _server_log(rdir)
    return f"""# Generated by packetflow.cli.localkafka -- broker logs go to a file, not stdout.
status = warn
name = PacketFlowLocalKafka

appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE

logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.controller.name = kafka.controller
logger.controller.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _jvm_base(java: str, lib: Path, rdir: Path, heap: tuple[str, str]) -> list[str]:
    return [
        java,
        f"-Xms{heap[0]}",
        f"-Xmx{heap[1]}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={rdir / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={rdir / 'logs'}",
        "-cp",
        str(lib / "*"),
    ]


def _heap(layout: _Layout) -> tuple[str, str]:
    """JVM heap (-Xms, -Xmx) per node: smaller for a cluster, three JVMs share the box."""
    return ("256m", "768m") if layout.brokers == 1 else ("128m", "384m")


def _cluster_id(rdir: Path) -> str:
    """The run dir's KRaft cluster id (shared by all its nodes), made on first use."""
    cid_file = rdir / "cluster.id"
    cluster_id = cid_file.read_text().strip() if cid_file.is_file() else ""
    if not cluster_id:
        cluster_id = _random_cluster_id()
        cid_file.write_text(cluster_id + "\n")
    return cluster_id


def _format_storage(
    java: str, lib: Path, ndir: Path, cluster_id: str, extra: Sequence[str] = ()
) -> None:
    """Format a node's KRaft log dir once (kept across restarts); *extra* StorageTool args."""
    if _is_formatted(ndir):
        return
    cmd = [
        *_jvm_base(java, lib, ndir, ("64m", "256m")),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(ndir / "server.properties"),
        "--ignore-formatted",
        *extra,
    ]
    returncode, output = _run(cmd, ndir, 120, "kafka StorageTool format timed out after 120s")
    if returncode != 0:
        raise LocalKafkaError(
            f"formatting Kafka storage in {ndir / 'data'} failed (exit {returncode}): "
            f"{_tail_text(output, 6) or _tail(_server_log(ndir), 6) or 'no output'}"
        )


def _configure(
    layout: _Layout,
    nodes: Sequence[_Node],
    java: str,
    lib: Path,
    progress: Progress | None,
) -> None:
    """Write the config of *nodes* (making TLS material and SCRAM users first when secure)
    and format their storage; other nodes of the layout are running and left alone."""
    rdir = layout.rdir
    scram: list[str] = []
    if layout.secure:
        _ensure_tls(_tls_dir(rdir))
        credentials = _read_credentials(rdir)
        if credentials is None:
            # SCRAM users are only created when storage is formatted: start over.
            formatted = [n for n in layout.nodes if _is_formatted(n.dir)]
            if formatted and len(nodes) < len(layout.nodes):
                raise LocalKafkaError(
                    f"{_credentials_file(rdir)} is missing while nodes of {rdir} run; "
                    "stop them first (the storage must be re-formatted with new users)"
                )
            if formatted:
                _say(progress, f"No {_credentials_file(rdir).name}: re-formatting {rdir}")
                for node in formatted:
                    shutil.rmtree(node.dir / "data")
            credentials = _new_credentials(rdir)
        scram = _scram_args(credentials)
    for node in nodes:
        (node.dir / "logs").mkdir(parents=True, exist_ok=True)
        (node.dir / "data").mkdir(exist_ok=True)
        props = _server_properties(layout, node)
        if layout.secure:
            _write_private(node.dir / "server.properties", props)
        else:
            (node.dir / "server.properties").write_text(props)
        (node.dir / "log4j2.properties").write_text(_log4j2_properties(node.dir))
    if layout.brokers == 1:
        (rdir / "controller.port").write_text(f"{layout.nodes[0].controller_port}\n")
    _save_layout(layout)
    cluster_id = _cluster_id(rdir)
    for node in nodes:
        _format_storage(java, lib, node.dir, cluster_id, scram)


# --------------------------------------------------------------------------- security


def _write_private(path: Path, data: str | bytes) -> None:
    """Write *path* readable by its owner only (mode 0600, also if it existed)."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(raw)


def _read_credentials(rdir: Path) -> dict[str, str] | None:
    """``{user: password}`` from credentials.json, or None if missing or incomplete."""
    try:
        record = json.loads(_credentials_file(rdir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    users = {str(k): str(v) for k, v in record.items()}
    return users if {ADMIN_USER, CLIENT_USER} <= users.keys() else None


def _new_credentials(rdir: Path) -> dict[str, str]:
    """Random passwords for the SCRAM users, saved to credentials.json (0600)."""
    # Hex only: StorageTool's --add-scram syntax has no quoting to rely on.
    credentials = {user: secrets.token_hex(16) for user in (ADMIN_USER, CLIENT_USER)}
    _write_private(_credentials_file(rdir), json.dumps(credentials, indent=2) + "\n")
    return credentials


def _scram_args(credentials: Mapping[str, str]) -> list[str]:
    """StorageTool ``--add-scram`` args creating every user for every SCRAM mechanism."""
    args: list[str] = []
    for mech in SCRAM_MECHANISMS:
        for user, password in credentials.items():
            args += ["--add-scram", f"{mech}=[name={user},password={password}]"]
    return args


def _ensure_tls(tls: Path) -> None:
    """Make a self-signed CA and, signed by it, a server certificate for 127.0.0.1 and
    localhost and a client certificate, unless all their files already exist. The CA key is
    not kept: nothing else is ever signed with it."""
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    if all((tls / name).is_file() for name in names):
        return
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _cert_name(f"PacketFlow local Kafka CA ({tls.parent.name})")
    ca_cert = (
        _cert_builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certs=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_sans = [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
    server = _issue(ca_key, ca_name, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, server_sans)
    client = _issue(ca_key, ca_name, CLIENT_USER, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    tls.mkdir(mode=0o700, parents=True, exist_ok=True)
    (tls / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for stem, (cert_pem, key_pem) in (("server", server), ("client", client)):
        (tls / f"{stem}.pem").write_bytes(cert_pem)
        _write_private(tls / f"{stem}.key", key_pem)


def _cert_name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PacketFlow local Kafka"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _cert_builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    """A certificate valid from yesterday for ten years, with a subject key identifier."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, sign_certs: bool) -> x509.KeyUsage:
    """Key usage of a CA (signs certificates) or of a TLS peer (signs handshakes)."""
    return x509.KeyUsage(
        digital_signature=not sign_certs,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certs,
        crl_sign=sign_certs,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    common_name: str,
    purpose: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[bytes, bytes]:
    """A new key and a certificate for it signed by the CA: (cert PEM, PKCS#8 key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _cert_builder(_cert_name(common_name), ca_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certs=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


# --------------------------------------------------------------------------- lifecycle


def status(port: int = DEFAULT_PORT, *, home: str | os.PathLike[str] | None = None) -> BrokerStatus:
    """Report whether the managed broker (every node of a cluster) for *port* is running
    (pid alive and port open), with its security settings when it is a secure one."""
    _validate_port(port)
    return _status(_current_layout(port, run_dir(port, home)))


def _status(layout: _Layout) -> BrokerStatus:
    nodes = tuple(_node_status(node) for node in layout.nodes)
    first = nodes[0]
    st = BrokerStatus(
        running=all(node.running for node in nodes),
        port=layout.port,
        controller_port=first.controller_port,
        pid=first.pid,
        run_dir=layout.rdir,
        data_dir=first.data_dir,
        log_file=first.log_file,
        brokers=layout.brokers,
        nodes=nodes,
    )
    if not layout.secure:
        return st
    tls = _tls_dir(layout.rdir)
    credentials = _read_credentials(layout.rdir) or {}
    return dataclasses.replace(
        st,
        secure=True,
        ca_file=tls / "ca.pem",
        client_cert=tls / "client.pem",
        client_key=tls / "client.key",
        credentials_file=_credentials_file(layout.rdir),
        username=CLIENT_USER,
        password=credentials.get(CLIENT_USER),
    )


def _node_status(node: _Node) -> NodeStatus:
    pid = _read_pid(node.dir)
    return NodeStatus(
        node_id=node.node_id,
        running=pid is not None and _port_accepts(node.port),
        port=node.port,
        controller_port=node.controller_port,
        internal_port=node.internal_port,
        pid=pid,
        run_dir=node.dir,
        data_dir=node.dir / "data",
        log_file=_server_log(node.dir),
    )


def _probe_config(layout: _Layout) -> dict[str, Any]:
    """aiokafka settings the readiness probe needs: SASL_SSL as ``admin`` when secure."""
    if not layout.secure:
        return {}
    credentials = _read_credentials(layout.rdir) or {}
    return _sasl_ssl_config(
        _tls_dir(layout.rdir) / "ca.pem", ADMIN_USER, credentials.get(ADMIN_USER, "")
    )


def _exit_code(handle: subprocess.Popen[bytes] | int) -> int | str | None:
    """Exit status of a JVM we started (Popen) or found running (pid); None while it runs."""
    if isinstance(handle, subprocess.Popen):
        return handle.poll()
    return None if _pid_alive(handle) else "?"


def _wait_ready(
    layout: _Layout,
    nodes: Sequence[_Node],
    handles: Mapping[int, subprocess.Popen[bytes] | int],
    deadline: float,
    progress: Progress | None,
) -> None:
    """Block until *nodes* answer metadata requests and the cluster reports each of them
    as a live broker; raise if one of their JVMs (*handles*, by node id) dies or time is up."""
    bootstrap = ",".join(f"{HOST}:{node.port}" for node in nodes)
    wanted = {node.node_id for node in nodes}
    client = _probe_config(layout)
    live: frozenset[int] = frozenset()
    started = time.monotonic()
    while True:
        for node in nodes:
            code = _exit_code(handles[node.node_id])
            if code is not None:
                detail = (
                    _tail(_server_log(node.dir), 6)
                    or _tail(_console_log(node.dir), 6)
                    or "no output"
                )
                with contextlib.suppress(OSError):
                    _pidfile(node.dir).unlink()
                raise LocalKafkaError(
                    f"Kafka {_who(layout, node)} exited during startup (exit {code}); "
                    f"logs in {node.dir}: {detail}"
                )
        # Probe only once every port is open: aiokafka logs each refused connection.
        if all(_port_accepts(node.port, timeout=0.5) for node in nodes):
            live = _probe_brokers(bootstrap, client)
            if wanted <= live:
                return
        if time.monotonic() >= deadline:
            late = next((node for node in nodes if node.node_id not in live), nodes[0])
            pid = handles[late.node_id]
            pid = pid.pid if isinstance(pid, subprocess.Popen) else pid
            raise LocalKafkaError(
                f"Kafka {_who(layout, late)} (pid {pid}) not ready on {bootstrap} after "
                f"{time.monotonic() - started:.0f}s; still running, logs in {late.dir}: "
                f"{_tail(_server_log(late.dir), 4) or 'no output'}"
            )
        _say(progress, f"Waiting for Kafka on {bootstrap} ({time.monotonic() - started:.0f}s)")
        time.sleep(0.5)


def _who(layout: _Layout, node: _Node) -> str:
    return "broker" if layout.brokers == 1 else f"node {node.node_id}"


def _check_bindable(nodes: Sequence[_Node], rdir: Path) -> None:
    """Refuse to start when another process listens on one of the nodes' ports."""
    for node in nodes:
        for port, what in node.listeners():
            if not _port_bindable(port):
                raise LocalKafkaError(
                    f"{what} {HOST}:{port} is already in use by another process (not a broker "
                    f"managed from {rdir}); stop it or pick another --port"
                )


def _launch(java: str, lib: Path, layout: _Layout, node: _Node) -> subprocess.Popen[bytes]:
    """Start a node's JVM detached (own session, output to kafka.out) and write its pidfile."""
    cmd = [
        *_jvm_base(java, lib, node.dir, _heap(layout)),
        "kafka.Kafka",
        str(node.dir / "server.properties"),
    ]
    with _console_log(node.dir).open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=node.dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _pidfile(node.dir).write_text(f"{proc.pid}\n")
    return proc


def _launch_and_wait(
    java: str,
    lib: Path,
    layout: _Layout,
    down: Sequence[_Node],
    running: Mapping[int, int],
    deadline: float,
    progress: Progress | None,
) -> None:
    """Start the *down* nodes and wait until all nodes of the layout serve; on failure stop
    the JVMs started here."""
    handles: dict[int, subprocess.Popen[bytes] | int] = dict(running)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for node in down:
            proc = _launch(java, lib, layout, node)
            procs.append(proc)
            handles[node.node_id] = proc
        _wait_ready(layout, layout.nodes, handles, deadline, progress)
    except BaseException:
        _terminate([proc.pid for proc in procs if proc.poll() is None], 10.0)
        for node in down:
            with contextlib.suppress(OSError):
                _pidfile(node.dir).unlink()
        raise


def start(
    port: int = DEFAULT_PORT,
    *,
    controller_port: int | None = None,
    secure: bool = False,
    brokers: int = 1,
    home: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> BrokerStatus:
    """Start (fetching if needed) the broker on 127.0.0.1:*port*; idempotent.

    ``secure=True`` makes the client listener SASL_SSL with SCRAM users (see the module
    doc); ``brokers=3`` starts a three-node cluster on *port*..*port*+5. Only nodes that are
    down are started. Returns once every node answers metadata requests (over SASL_SSL when
    secure) and the cluster reports all of them as live brokers. Raises
    :class:`LocalKafkaError` if a port is used by something else, the run dir holds a
    broker of another shape, a JVM exits, or it is not ready within *timeout* seconds
    (default 90, or 180 for a cluster).
    """
    rdir = run_dir(port, home)
    layout = _plan(port, rdir, brokers=brokers, secure=secure, controller_port=controller_port)
    if timeout is None:
        timeout = 90.0 if brokers == 1 else 180.0
    rdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout

    with _locked(rdir / ".lock"):
        _check_compatible(layout)
        pids = {node.node_id: _read_pid(node.dir) for node in layout.nodes}
        running = {node_id: pid for node_id, pid in pids.items() if pid is not None}
        down = [node for node in layout.nodes if node.node_id not in running]
        if not down:
            _say(progress, f"Kafka already running (pid {_pids_text(running)}); checking it serves")
            _wait_ready(layout, layout.nodes, running, deadline, progress)
            return _replace_running(_status(layout), already_running=True)

        _check_bindable(down, rdir)
        java = _java()
        _check_java_version(java)
        lib = fetch(home, progress=progress)

        _say(progress, f"Configuring Kafka {KAFKA_VERSION} in {rdir}")
        _configure(layout, down, java, lib, progress)

        what = "" if brokers == 1 else f" ({brokers} nodes)"
        _say(progress, f"Starting Kafka {KAFKA_VERSION} on {HOST}:{port}{what}")
        _launch_and_wait(java, lib, layout, down, running, deadline, progress)
        return _replace_running(_status(layout), already_running=False)


def start_node(
    port: int,
    node_id: int,
    *,
    home: str | os.PathLike[str] | None = None,
    timeout: float = 90.0,
    progress: Progress | None = None,
) -> BrokerStatus:
    """Restart one stopped node of the existing broker or cluster on base *port* (e.g.
    after :func:`kill_node`); return once it serves and the cluster lists it as a live
    broker. Waits for it the same way if it is already running."""
    _validate_port(port)
    rdir = run_dir(port, home)
    if not rdir.is_dir():
        raise LocalKafkaError(f"no local Kafka set up in {rdir}; start it first")
    deadline = time.monotonic() + timeout
    with _locked(rdir / ".lock"):
        layout = _current_layout(port, rdir)
        node = layout.node(node_id)
        pid = _read_pid(node.dir)
        if pid is not None:
            _wait_ready(layout, [node], {node_id: pid}, deadline, progress)
            return _status(layout)
        if not _is_formatted(node.dir):
            raise LocalKafkaError(
                f"node {node_id} in {node.dir} was never started; start the whole broker first"
            )
        _check_bindable([node], rdir)
        java = _java()
        lib = fetch(home, progress=progress)
        _say(progress, f"Starting Kafka node {node_id} on {HOST}:{node.port}")
        proc = _launch(java, lib, layout, node)
        try:
            _wait_ready(layout, [node], {node_id: proc}, deadline, progress)
        except BaseException:
            if proc.poll() is None:
                _terminate([proc.pid], 10.0)
            with contextlib.suppress(OSError):
                _pidfile(node.dir).unlink()
            raise
        return _status(layout)


def _pids_text(pids: Mapping[int, int]) -> str:
    return ", ".join(str(pid) for _, pid in sorted(pids.items()))


def _replace_running(st: BrokerStatus, *, already_running: bool) -> BrokerStatus:
    return dataclasses.replace(st, running=True, already_running=already_running)


def _terminate(pids: Collection[int], timeout: float) -> None:
    """SIGTERM every pid, wait up to *timeout* seconds for all of them, then SIGKILL the rest.

    All at once, so the nodes of a cluster shut down while they still have a quorum.
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if _wait_gone(pids, timeout):
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, 10.0)


def _wait_gone(pids: Collection[int], timeout: float) -> bool:
    """Wait up to *timeout* seconds until none of *pids* is alive; True if so."""
    deadline = time.monotonic() + timeout
    while any(_pid_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def stop(
    port: int = DEFAULT_PORT,
    *,
    home: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
) -> int | None:
    """Stop the managed broker on *port* (every node of a cluster); return its pid (the
    lowest-numbered running node's for a cluster), or None if it was not running."""
    _validate_port(port)
    rdir = run_dir(port, home)
    if not rdir.is_dir():
        return None
    running = {
        node.dir: pid
        for node in _current_layout(port, rdir).nodes
        if (pid := _read_pid(node.dir)) is not None
    }
    if not running:
        return None
    _terminate(list(running.values()), timeout)
    for ndir, pid in running.items():
        if _pid_alive(pid):
            raise LocalKafkaError(f"Kafka broker pid {pid} survived SIGKILL")
        with contextlib.suppress(OSError):
            _pidfile(ndir).unlink()
    return next(iter(running.values()))


def node_pid(port: int, node_id: int, *, home: str | os.PathLike[str] | None = None) -> int | None:
    """Pid of node *node_id* of the broker or cluster on base *port*, None if it is down."""
    _validate_port(port)
    return _read_pid(_current_layout(port, run_dir(port, home)).node(node_id).dir)


def kill_node(
    port: int,
    node_id: int,
    sig: int = signal.SIGKILL,
    *,
    home: str | os.PathLike[str] | None = None,
    wait: bool = True,
    timeout: float = 30.0,
) -> int:
    """Send *sig* to node *node_id* of the broker or cluster on base *port* (to test
    failover) and return its pid. With *wait* (the default; pass False for signals that
    do not end it, like SIGSTOP) return only once it has exited."""
    _validate_port(port)
    layout = _current_layout(port, run_dir(port, home))
    node = layout.node(node_id)
    pid = _read_pid(node.dir)
    if pid is None:
        raise LocalKafkaError(f"Kafka node {node_id} in {node.dir} is not running")
    os.kill(pid, sig)
    if wait:
        if not _wait_gone([pid], timeout):
            raise LocalKafkaError(
                f"Kafka node {node_id} (pid {pid}) still alive {timeout:.0f}s after signal {sig}"
            )
        with contextlib.suppress(OSError):
            _pidfile(node.dir).unlink()
    return pid
