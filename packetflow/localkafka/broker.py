"""The lifecycle of a local broker or cluster: :func:`start` (fetch, configure and launch
the nodes that are down, then wait until every node serves), :func:`status`, :func:`stop`,
and per node :func:`start_node`, :func:`node_pid` and :func:`kill_node` (to test
failover). Each node's JVM runs detached; its pidfile, checked against ``/proc`` so that a
reused pid is not taken for it, tells whether it runs."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from packetflow.localkafka._process import Progress, locked, say, tail
from packetflow.localkafka.config import configure, jvm_base, node_heap
from packetflow.localkafka.install import check_java_version, fetch, find_java
from packetflow.localkafka.layout import (
    CLIENT_USER,
    DEFAULT_PORT,
    HOST,
    KAFKA_VERSION,
    BrokerStatus,
    Layout,
    LocalKafkaError,
    Node,
    NodeStatus,
    check_compatible,
    console_log,
    credentials_file,
    current_layout,
    is_formatted,
    pid_file,
    plan,
    run_dir,
    server_log,
    tls_dir,
    validate_port,
)
from packetflow.localkafka.probe import port_accepts, port_bindable, probe_brokers, probe_config
from packetflow.localkafka.security import read_credentials


def status(port: int = DEFAULT_PORT, *, home: str | os.PathLike[str] | None = None) -> BrokerStatus:
    """Report whether the managed broker (every node of a cluster) for *port* is running
    (pid alive and port open), with its security settings when it is a secure one."""
    validate_port(port)
    return _status(current_layout(port, run_dir(port, home)))


def _status(layout: Layout) -> BrokerStatus:
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
    tls = tls_dir(layout.rdir)
    credentials = read_credentials(layout.rdir) or {}
    return dataclasses.replace(
        st,
        secure=True,
        ca_file=tls / "ca.pem",
        client_cert=tls / "client.pem",
        client_key=tls / "client.key",
        credentials_file=credentials_file(layout.rdir),
        username=CLIENT_USER,
        password=credentials.get(CLIENT_USER),
    )


def _node_status(node: Node) -> NodeStatus:
    pid = _read_pid(node.dir)
    return NodeStatus(
        node_id=node.node_id,
        running=pid is not None and port_accepts(node.port),
        port=node.port,
        controller_port=node.controller_port,
        internal_port=node.internal_port,
        pid=pid,
        run_dir=node.dir,
        data_dir=node.dir / "data",
        log_file=server_log(node.dir),
    )


def _exit_code(handle: subprocess.Popen[bytes] | int) -> int | str | None:
    """Exit status of a JVM we started (Popen) or found running (pid); None while it runs."""
    if isinstance(handle, subprocess.Popen):
        return handle.poll()
    return None if _pid_alive(handle) else "?"


def _wait_ready(
    layout: Layout,
    nodes: Sequence[Node],
    handles: Mapping[int, subprocess.Popen[bytes] | int],
    deadline: float,
    progress: Progress | None,
) -> None:
    """Block until *nodes* answer metadata requests and the cluster reports each of them
    as a live broker; raise if one of their JVMs (*handles*, by node id) dies or time is up."""
    bootstrap = ",".join(f"{HOST}:{node.port}" for node in nodes)
    wanted = {node.node_id for node in nodes}
    client = probe_config(layout)
    live: frozenset[int] = frozenset()
    started = time.monotonic()
    while True:
        for node in nodes:
            code = _exit_code(handles[node.node_id])
            if code is not None:
                detail = (
                    tail(server_log(node.dir), 6) or tail(console_log(node.dir), 6) or "no output"
                )
                with contextlib.suppress(OSError):
                    pid_file(node.dir).unlink()
                raise LocalKafkaError(
                    f"Kafka {_who(layout, node)} exited during startup (exit {code}); "
                    f"logs in {node.dir}: {detail}"
                )
        # Probe only once every port is open: aiokafka logs each refused connection.
        if all(port_accepts(node.port, timeout=0.5) for node in nodes):
            live = probe_brokers(bootstrap, client)
            if wanted <= live:
                return
        if time.monotonic() >= deadline:
            late = next((node for node in nodes if node.node_id not in live), nodes[0])
            pid = handles[late.node_id]
            pid = pid.pid if isinstance(pid, subprocess.Popen) else pid
            raise LocalKafkaError(
                f"Kafka {_who(layout, late)} (pid {pid}) not ready on {bootstrap} after "
                f"{time.monotonic() - started:.0f}s; still running, logs in {late.dir}: "
                f"{tail(server_log(late.dir), 4) or 'no output'}"
            )
        say(progress, f"Waiting for Kafka on {bootstrap} ({time.monotonic() - started:.0f}s)")
        time.sleep(0.5)


def _who(layout: Layout, node: Node) -> str:
    return "broker" if layout.brokers == 1 else f"node {node.node_id}"


def _check_bindable(nodes: Sequence[Node], rdir: Path) -> None:
    """Refuse to start when another process listens on one of the nodes' ports."""
    for node in nodes:
        for port, what in node.listeners():
            if not port_bindable(port):
                raise LocalKafkaError(
                    f"{what} {HOST}:{port} is already in use by another process (not a broker "
                    f"managed from {rdir}); stop it or pick another --port"
                )


def _launch(java: str, lib: Path, layout: Layout, node: Node) -> subprocess.Popen[bytes]:
    """Start a node's JVM detached (own session, output to kafka.out) and write its pidfile."""
    cmd = [
        *jvm_base(java, lib, node.dir, node_heap(layout)),
        "kafka.Kafka",
        str(node.dir / "server.properties"),
    ]
    with console_log(node.dir).open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=node.dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    pid_file(node.dir).write_text(f"{proc.pid}\n")
    return proc


def _launch_and_wait(
    java: str,
    lib: Path,
    layout: Layout,
    down: Sequence[Node],
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
                pid_file(node.dir).unlink()
        raise


def start(
    port: int = DEFAULT_PORT,
    *,
    controller_port: int | None = None,
    secure: bool = False,
    brokers: int = 1,
    home: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    fresh: bool = False,
    progress: Progress | None = None,
) -> BrokerStatus:
    """Start (fetching if needed) the broker on 127.0.0.1:*port*; idempotent.

    ``fresh=True`` starts the nodes that are down with empty storage (a scratch broker: every
    test run makes topics of its own, and a broker that keeps them all runs out of file
    descriptors after some tens of thousands of partitions); running nodes are left alone.

    ``secure=True`` makes the client listener SASL_SSL with SCRAM users (see the package
    doc); ``brokers=3`` starts a three-node cluster on *port*..*port*+5. Only nodes that are
    down are started. Returns once every node answers metadata requests (over SASL_SSL when
    secure) and the cluster reports all of them as live brokers. Raises
    :class:`LocalKafkaError` if a port is used by something else, the run dir holds a
    broker of another shape, a JVM exits, or it is not ready within *timeout* seconds
    (default 90, or 180 for a cluster).
    """
    rdir = run_dir(port, home)
    layout = plan(port, rdir, brokers=brokers, secure=secure, controller_port=controller_port)
    if timeout is None:
        timeout = 90.0 if brokers == 1 else 180.0
    rdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout

    with locked(rdir / ".lock"):
        check_compatible(layout)
        pids = {node.node_id: _read_pid(node.dir) for node in layout.nodes}
        running = {node_id: pid for node_id, pid in pids.items() if pid is not None}
        down = [node for node in layout.nodes if node.node_id not in running]
        if not down:
            say(progress, f"Kafka already running (pid {_pids_text(running)}); checking it serves")
            _wait_ready(layout, layout.nodes, running, deadline, progress)
            return _replace_running(_status(layout), already_running=True)

        _check_bindable(down, rdir)
        java = find_java()
        check_java_version(java)
        lib = fetch(home, progress=progress)
        if fresh:
            wipe_storage(down, progress)

        say(progress, f"Configuring Kafka {KAFKA_VERSION} in {rdir}")
        configure(layout, down, java, lib, progress)

        what = "" if brokers == 1 else f" ({brokers} nodes)"
        say(progress, f"Starting Kafka {KAFKA_VERSION} on {HOST}:{port}{what}")
        _launch_and_wait(java, lib, layout, down, running, deadline, progress)
        return _replace_running(_status(layout), already_running=False)


def wipe_storage(nodes: Iterable[Node], progress: Progress | None = None) -> None:
    """Remove the storage (topics, offsets, metadata) of *nodes*, which must be down; it is
    formatted again as they start."""
    for node in nodes:
        data = node.dir / "data"
        if data.exists():
            say(progress, f"Starting fresh: removing {data}")
            shutil.rmtree(data)


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
    validate_port(port)
    rdir = run_dir(port, home)
    if not rdir.is_dir():
        raise LocalKafkaError(f"no local Kafka set up in {rdir}; start it first")
    deadline = time.monotonic() + timeout
    with locked(rdir / ".lock"):
        layout = current_layout(port, rdir)
        node = layout.node(node_id)
        pid = _read_pid(node.dir)
        if pid is not None:
            _wait_ready(layout, [node], {node_id: pid}, deadline, progress)
            return _status(layout)
        if not is_formatted(node.dir):
            raise LocalKafkaError(
                f"node {node_id} in {node.dir} was never started; start the whole broker first"
            )
        _check_bindable([node], rdir)
        java = find_java()
        lib = fetch(home, progress=progress)
        say(progress, f"Starting Kafka node {node_id} on {HOST}:{node.port}")
        proc = _launch(java, lib, layout, node)
        try:
            _wait_ready(layout, [node], {node_id: proc}, deadline, progress)
        except BaseException:
            if proc.poll() is None:
                _terminate([proc.pid], 10.0)
            with contextlib.suppress(OSError):
                pid_file(node.dir).unlink()
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
    validate_port(port)
    rdir = run_dir(port, home)
    if not rdir.is_dir():
        return None
    running = {
        node.dir: pid
        for node in current_layout(port, rdir).nodes
        if (pid := _read_pid(node.dir)) is not None
    }
    if not running:
        return None
    _terminate(list(running.values()), timeout)
    for ndir, pid in running.items():
        if _pid_alive(pid):
            raise LocalKafkaError(f"Kafka broker pid {pid} survived SIGKILL")
        with contextlib.suppress(OSError):
            pid_file(ndir).unlink()
    return next(iter(running.values()))


def node_pid(port: int, node_id: int, *, home: str | os.PathLike[str] | None = None) -> int | None:
    """Pid of node *node_id* of the broker or cluster on base *port*, None if it is down."""
    validate_port(port)
    return _read_pid(current_layout(port, run_dir(port, home)).node(node_id).dir)


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
    validate_port(port)
    layout = current_layout(port, run_dir(port, home))
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
            pid_file(node.dir).unlink()
    return pid


# --------------------------------------------------------------------------- pids


def _read_pid(ndir: Path) -> int | None:
    """Pid from the pidfile if that process is alive and is our broker; clears stale files."""
    pidfile = pid_file(ndir)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if _pid_alive(pid) and _is_our_broker(pid, ndir):
        return pid
    with contextlib.suppress(OSError):
        pidfile.unlink()
    return None


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
