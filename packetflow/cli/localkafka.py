"""Manage a single-node KRaft Apache Kafka broker for local development and tests.

The broker jars are fetched from Maven Central with ``mvn`` into
``$PACKETFLOW_HOME/kafka/<version>/lib`` and the broker runs as a detached ``java``
process whose state (config, data, logs, pidfile) lives in
``$PACKETFLOW_HOME/kafka/run-<port>/``. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from packetflow.engine import paths

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
DEFAULT_PORT = 9092
HOST = "127.0.0.1"
MIN_JAVA_MAJOR = 17

#: Maven coordinates (groupId, artifactId, version) of the broker runtime.
ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    ("org.slf4j", "slf4j-api", "2.0.17"),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.24.3"),
    ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
)

Progress = Callable[[str], None]


class LocalKafkaError(RuntimeError):
    """A user-facing failure managing the local broker (message is a single line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")).strip())


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    """State of the local broker on one port."""

    running: bool
    port: int
    controller_port: int
    pid: int | None
    run_dir: Path
    data_dir: Path
    log_file: Path
    version: str = KAFKA_VERSION
    already_running: bool = False

    @property
    def bootstrap(self) -> str:
        """``host:port`` bootstrap address."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` URL as used by PacketFlow."""
        return f"kafka://{self.bootstrap}"


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
    """Per-port runtime directory (config, data, logs, pidfile)."""
    return packetflow_home(home) / "kafka" / f"run-{port}"


def _lib_dir(home: str | os.PathLike[str] | None) -> Path:
    return install_dir(home) / "lib"


def _marker(home: str | os.PathLike[str] | None) -> Path:
    return install_dir(home) / ".fetched"


def _pidfile(rdir: Path) -> Path:
    return rdir / "kafka.pid"


def _server_log(rdir: Path) -> Path:
    return rdir / "logs" / "server.log"


def _console_log(rdir: Path) -> Path:
    return rdir / "kafka.out"


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


def _is_our_broker(pid: int, rdir: Path) -> bool:
    """Best-effort check that *pid* is the Kafka JVM started for *rdir* (guards pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return True  # no procfs: trust the pidfile
    return "kafka.Kafka" in cmdline and str(rdir) in cmdline


def _read_pid(rdir: Path) -> int | None:
    """Pid from the pidfile if that process is alive and is our broker; clears stale files."""
    pidfile = _pidfile(rdir)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and _is_our_broker(pid, rdir):
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


def _run_in_thread(fn: Callable[[], bool]) -> bool:
    """Run *fn* in a fresh thread (safe even when the caller has a running event loop)."""
    result: list[bool] = []

    def target() -> None:
        try:
            result.append(fn())
        except Exception:
            result.append(False)

    thread = threading.Thread(target=target, name="localkafka-probe", daemon=True)
    thread.start()
    thread.join(30.0)
    return bool(result and result[0])


def _probe_metadata(bootstrap: str, timeout_ms: int = 5000) -> bool:
    """True if the broker answers a metadata request and reports at least one live broker."""

    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=timeout_ms,
            client_id="packetflow-localkafka-probe",
        )
        try:
            await asyncio.wait_for(admin.start(), timeout_ms / 1000)
            cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_ms / 1000)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        return bool(cluster.get("brokers"))

    return _run_in_thread(lambda: asyncio.run(probe()))


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


# --------------------------------------------------------------------------- config


def _server_properties(port: int, controller_port: int, rdir: Path) -> str:
    data = rdir / "data"
    return f"""# Generated by packetflow.cli.localkafka -- single-node KRaft broker+controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller_port}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
metadata.log.dir={data}

num.partitions=4
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

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


def _format_storage(java: str, lib: Path, rdir: Path) -> None:
    """Format the KRaft log dir once (kept across restarts)."""
    if (rdir / "data" / "meta.properties").is_file():
        return
    cid_file = rdir / "cluster.id"
    cluster_id = cid_file.read_text().strip() if cid_file.is_file() else ""
    if not cluster_id:
        cluster_id = _random_cluster_id()
        cid_file.write_text(cluster_id + "\n")
    cmd = [
        *_jvm_base(java, lib, rdir, ("64m", "256m")),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(rdir / "server.properties"),
        "--ignore-formatted",
    ]
    returncode, output = _run(cmd, rdir, 120, "kafka StorageTool format timed out after 120s")
    if returncode != 0:
        raise LocalKafkaError(
            f"formatting Kafka storage in {rdir / 'data'} failed (exit {returncode}): "
            f"{_tail_text(output, 6) or _tail(_server_log(rdir), 6) or 'no output'}"
        )


# --------------------------------------------------------------------------- lifecycle


def status(port: int = DEFAULT_PORT, *, home: str | os.PathLike[str] | None = None) -> BrokerStatus:
    """Report whether the managed broker for *port* is running (pid alive and port open)."""
    _validate_port(port)
    rdir = run_dir(port, home)
    pid = _read_pid(rdir)
    cport_file = rdir / "controller.port"
    try:
        cport = int(cport_file.read_text().strip())
    except (OSError, ValueError):
        cport = port + 1
    return BrokerStatus(
        running=pid is not None and _port_accepts(port),
        port=port,
        controller_port=cport,
        pid=pid,
        run_dir=rdir,
        data_dir=rdir / "data",
        log_file=_server_log(rdir),
    )


def _wait_ready(
    proc: subprocess.Popen[bytes] | None,
    pid: int,
    port: int,
    rdir: Path,
    deadline: float,
    progress: Progress | None,
) -> None:
    """Block until the broker answers metadata requests; raise if it dies or times out."""
    bootstrap = f"{HOST}:{port}"
    started = time.monotonic()
    while True:
        dead = proc.poll() is not None if proc is not None else not _pid_alive(pid)
        if dead:
            code = proc.returncode if proc is not None else "?"
            detail = _tail(_server_log(rdir), 6) or _tail(_console_log(rdir), 6) or "no output"
            with contextlib.suppress(OSError):
                _pidfile(rdir).unlink()
            raise LocalKafkaError(
                f"Kafka broker exited during startup (exit {code}); logs in {rdir}: {detail}"
            )
        if _port_accepts(port, timeout=0.5) and _probe_metadata(bootstrap):
            return
        if time.monotonic() >= deadline:
            raise LocalKafkaError(
                f"Kafka broker (pid {pid}) not ready on {bootstrap} after "
                f"{time.monotonic() - started:.0f}s; still running, logs in {rdir}: "
                f"{_tail(_server_log(rdir), 4) or 'no output'}"
            )
        _say(progress, f"Waiting for Kafka on {bootstrap} ({time.monotonic() - started:.0f}s)")
        time.sleep(0.5)


def start(
    port: int = DEFAULT_PORT,
    *,
    controller_port: int | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout: float = 90.0,
    progress: Progress | None = None,
) -> BrokerStatus:
    """Start (fetching if needed) the broker on 127.0.0.1:*port*; idempotent.

    Returns once a metadata request succeeds. Raises :class:`LocalKafkaError` if the
    port is used by something else, the JVM exits, or it is not ready within *timeout*.
    """
    cport = controller_port if controller_port is not None else port + 1
    _validate_port(port)
    _validate_port(cport, "controller port")
    if cport == port:
        raise LocalKafkaError(f"controller port must differ from broker port {port}")
    rdir = run_dir(port, home)
    rdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout

    with _locked(rdir / ".lock"):
        pid = _read_pid(rdir)
        if pid is not None:
            _say(progress, f"Kafka already running (pid {pid}); checking it serves")
            _wait_ready(None, pid, port, rdir, deadline, progress)
            return _replace_running(status(port, home=home), already_running=True)

        for p, what in ((port, "port"), (cport, "controller port")):
            if not _port_bindable(p):
                raise LocalKafkaError(
                    f"{what} {HOST}:{p} is already in use by another process (not a broker "
                    f"managed from {rdir}); stop it or pick another --port"
                )

        java = _java()
        _check_java_version(java)
        lib = fetch(home, progress=progress)

        _say(progress, f"Configuring Kafka {KAFKA_VERSION} in {rdir}")
        (rdir / "logs").mkdir(exist_ok=True)
        (rdir / "data").mkdir(exist_ok=True)
        (rdir / "server.properties").write_text(_server_properties(port, cport, rdir))
        (rdir / "log4j2.properties").write_text(_log4j2_properties(rdir))
        (rdir / "controller.port").write_text(f"{cport}\n")
        _format_storage(java, lib, rdir)

        _say(progress, f"Starting Kafka {KAFKA_VERSION} on {HOST}:{port}")
        cmd = [
            *_jvm_base(java, lib, rdir, ("256m", "768m")),
            "kafka.Kafka",
            str(rdir / "server.properties"),
        ]
        with _console_log(rdir).open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=rdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        _pidfile(rdir).write_text(f"{proc.pid}\n")
        try:
            _wait_ready(proc, proc.pid, port, rdir, deadline, progress)
        except BaseException:
            if proc.poll() is None:
                _terminate(proc.pid, 10.0)
            with contextlib.suppress(OSError):
                _pidfile(rdir).unlink()
            raise
        return _replace_running(status(port, home=home), already_running=False)


def _replace_running(st: BrokerStatus, *, already_running: bool) -> BrokerStatus:
    return dataclasses.replace(st, running=True, already_running=already_running)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM *pid*, wait up to *timeout* seconds, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)


def stop(
    port: int = DEFAULT_PORT,
    *,
    home: str | os.PathLike[str] | None = None,
    timeout: float = 30.0,
) -> int | None:
    """Stop the managed broker on *port*; return its pid, or None if it was not running."""
    _validate_port(port)
    rdir = run_dir(port, home)
    if not rdir.is_dir():
        return None
    pid = _read_pid(rdir)
    if pid is None:
        return None
    _terminate(pid, timeout)
    if _pid_alive(pid):
        raise LocalKafkaError(f"Kafka broker pid {pid} survived SIGKILL")
    with contextlib.suppress(OSError):
        _pidfile(rdir).unlink()
    return pid
