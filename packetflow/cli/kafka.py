"""``packetflow kafka``: start/stop/status of a local KRaft Apache Kafka broker or cluster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from packetflow import localkafka
from packetflow.localkafka import BrokerStatus, LocalKafkaError

app = typer.Typer(
    name="kafka",
    help=f"Manage a local KRaft Apache Kafka {localkafka.KAFKA_VERSION} broker, or "
    f"{localkafka.CLUSTER_SIZE}-node cluster, optionally with TLS + SASL/SCRAM "
    "(jars fetched once with Maven; needs java and mvn).",
    no_args_is_help=True,
    add_completion=False,
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

PortOpt = Annotated[
    int,
    typer.Option(
        "--port",
        "-p",
        help="Broker port on 127.0.0.1 (controller uses port+1; a cluster uses port..port+5, "
        "a secure broker also port+2, a secure cluster port+6..port+8).",
    ),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="PacketFlow cache dir (default: $PACKETFLOW_HOME or ~/.cache/packetflow).",
        file_okay=False,
    ),
]
ShowPasswordOpt = Annotated[
    bool,
    typer.Option(
        "--show-password",
        help="For a secure broker, print the SCRAM password of user 'packetflow' (by "
        "default only the file holding it is named).",
    ),
]


def _fail(exc: LocalKafkaError) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    return typer.Exit(code=1)


def _describe(st: BrokerStatus) -> str:
    if st.brokers == 1:
        text = (
            f"pid {st.pid}, bootstrap {st.bootstrap}, controller {localkafka.HOST}:"
            f"{st.controller_port}, Kafka {st.version}, data {st.data_dir}, log {st.log_file}"
        )
    else:
        text = (
            f"{st.brokers} nodes, bootstrap {st.bootstrap}, Kafka {st.version}, "
            f"run dir {st.run_dir}"
        )
    if st.secure:
        text += ", clients use SASL_SSL with SCRAM-SHA-256 or SCRAM-SHA-512"
    return text


def _details(st: BrokerStatus, show_password: bool) -> None:
    """Print the per-node lines of a cluster and how to connect to a secure broker."""
    if st.brokers > 1:
        for node in st.nodes:
            internal = (
                f", internal {localkafka.HOST}:{node.internal_port}" if node.internal_port else ""
            )
            _out.print(
                f"  node {node.node_id}: {'running' if node.running else 'down'}, pid {node.pid}, "
                f"bootstrap {node.bootstrap}, controller {localkafka.HOST}:{node.controller_port}"
                f"{internal}, log {node.log_file}",
                soft_wrap=True,
            )
    elif st.secure and st.nodes and st.nodes[0].internal_port:
        _out.print(
            f"  inter-broker listener: PLAINTEXT {localkafka.HOST}:{st.nodes[0].internal_port} "
            "(unauthenticated, 127.0.0.1 only)",
            soft_wrap=True,
        )
    if not st.secure:
        return
    _out.print(f"  URL: {st.url}", soft_wrap=True)
    if show_password and st.password:
        _out.print(f"  export {localkafka.PASSWORD_ENV}={st.password}", soft_wrap=True)
    else:
        _out.print(
            f"  password of user {st.username}: key {st.username!r} in {st.credentials_file} "
            f"(--show-password prints it); PacketFlow reads it from ${localkafka.PASSWORD_ENV}",
            soft_wrap=True,
        )
    _out.print(
        f"  CA {st.ca_file}; for optional mutual TLS: client cert {st.client_cert}, "
        f"key {st.client_key}",
        soft_wrap=True,
    )


@app.command()
def start(
    port: PortOpt = localkafka.DEFAULT_PORT,
    home: HomeOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            help="Seconds to wait for the broker to serve (default 90, 180 for a cluster).",
            show_default=False,
        ),
    ] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Clients connect with TLS + SASL/SCRAM (self-signed CA and random passwords "
            "made in the run dir) instead of PLAINTEXT.",
        ),
    ] = False,
    brokers: Annotated[
        int,
        typer.Option(
            "--brokers",
            "-b",
            help=f"Number of nodes: 1, or {localkafka.CLUSTER_SIZE} for a local cluster "
            "(replication factor 3, min.insync.replicas 2).",
        ),
    ] = 1,
    show_password: ShowPasswordOpt = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start with empty storage: no topics, offsets or groups from earlier runs "
            "(a scratch broker, as make test uses); a running broker is left as it is.",
        ),
    ] = False,
) -> None:
    """Start the broker (fetching Kafka on first use); no-op if already running."""
    began = time.monotonic()
    what = "Kafka" if brokers == 1 else f"a {brokers}-node Kafka cluster"
    try:
        with _err.status(f"Starting {what} on {localkafka.HOST}:{port}") as spinner:
            st = localkafka.start(
                port,
                secure=secure,
                brokers=brokers,
                home=home,
                timeout=timeout,
                fresh=fresh,
                progress=lambda msg: spinner.update(msg),
            )
    except LocalKafkaError as exc:
        raise _fail(exc) from None
    if st.already_running:
        _out.print(f"Kafka already running ({_describe(st)})", soft_wrap=True)
    else:
        took = time.monotonic() - began
        _out.print(f"Kafka started in {took:.1f}s ({_describe(st)})", soft_wrap=True)
    _details(st, show_password)


@app.command()
def stop(port: PortOpt = localkafka.DEFAULT_PORT, home: HomeOpt = None) -> None:
    """Stop the broker, or every node of a cluster (SIGTERM, then SIGKILL after 30 s);
    no-op if not running."""
    try:
        pids = [node.pid for node in localkafka.status(port, home=home).nodes if node.pid]
        with _err.status(f"Stopping Kafka on {localkafka.HOST}:{port}"):
            pid = localkafka.stop(port, home=home)
    except LocalKafkaError as exc:
        raise _fail(exc) from None
    if pid is None:
        _out.print(f"Kafka not running on {localkafka.HOST}:{port}")
    elif len(pids) > 1:
        _out.print(f"Kafka stopped (pids {', '.join(map(str, pids))}, base port {port})")
    else:
        _out.print(f"Kafka stopped (pid {pid}, port {port})")


@app.command()
def status(
    port: PortOpt = localkafka.DEFAULT_PORT,
    home: HomeOpt = None,
    show_password: ShowPasswordOpt = False,
) -> None:
    """Show whether the broker (every node of a cluster) is running; exit 0 if so, else 1."""
    try:
        st = localkafka.status(port, home=home)
    except LocalKafkaError as exc:
        raise _fail(exc) from None
    if st.running:
        _out.print(f"Kafka running ({_describe(st)})", soft_wrap=True)
        _details(st, show_password)
        return
    if st.brokers > 1 and any(node.pid for node in st.nodes):
        _out.print(f"Kafka cluster degraded ({_describe(st)})", soft_wrap=True)
        _details(st, show_password)
    elif st.pid is not None:
        _out.print(
            f"Kafka not serving: pid {st.pid} alive but {st.bootstrap} not accepting "
            f"connections (log {st.log_file})",
            soft_wrap=True,
        )
    else:
        _out.print(f"Kafka not running on {st.bootstrap}")
    raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
