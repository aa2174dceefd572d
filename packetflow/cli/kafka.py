"""``packetflow kafka``: start/stop/status of a local single-node Apache Kafka broker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from packetflow.cli import localkafka
from packetflow.cli.localkafka import BrokerStatus, LocalKafkaError

app = typer.Typer(
    name="kafka",
    help=f"Manage a local single-node KRaft Apache Kafka {localkafka.KAFKA_VERSION} broker "
    "(jars fetched once with Maven; needs java and mvn).",
    no_args_is_help=True,
    add_completion=False,
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

PortOpt = Annotated[
    int, typer.Option("--port", "-p", help="Broker port on 127.0.0.1 (controller uses port+1).")
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="PacketFlow cache dir (default: $PACKETFLOW_HOME or ~/.cache/packetflow).",
        file_okay=False,
    ),
]


def _fail(exc: LocalKafkaError) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
    return typer.Exit(code=1)


def _describe(st: BrokerStatus) -> str:
    return (
        f"pid {st.pid}, bootstrap {st.bootstrap}, controller {localkafka.HOST}:"
        f"{st.controller_port}, Kafka {st.version}, data {st.data_dir}, log {st.log_file}"
    )


@app.command()
def start(
    port: PortOpt = localkafka.DEFAULT_PORT,
    home: HomeOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the broker to serve.")
    ] = 90.0,
) -> None:
    """Start the broker (fetching Kafka on first use); no-op if already running."""
    began = time.monotonic()
    try:
        with _err.status(f"Starting Kafka on {localkafka.HOST}:{port}") as spinner:
            st = localkafka.start(
                port, home=home, timeout=timeout, progress=lambda msg: spinner.update(msg)
            )
    except LocalKafkaError as exc:
        raise _fail(exc) from None
    if st.already_running:
        _out.print(f"Kafka already running ({_describe(st)})", soft_wrap=True)
    else:
        took = time.monotonic() - began
        _out.print(f"Kafka started in {took:.1f}s ({_describe(st)})", soft_wrap=True)


@app.command()
def stop(port: PortOpt = localkafka.DEFAULT_PORT, home: HomeOpt = None) -> None:
    """Stop the broker (SIGTERM, then SIGKILL after 30 s); no-op if not running."""
    try:
        with _err.status(f"Stopping Kafka on {localkafka.HOST}:{port}"):
            pid = localkafka.stop(port, home=home)
    except LocalKafkaError as exc:
        raise _fail(exc) from None
    if pid is None:
        _out.print(f"Kafka not running on {localkafka.HOST}:{port}")
    else:
        _out.print(f"Kafka stopped (pid {pid}, port {port})")


@app.command()
def status(port: PortOpt = localkafka.DEFAULT_PORT, home: HomeOpt = None) -> None:
    """Show whether the broker is running; exit 0 if running, 1 if not."""
    try:
        st = localkafka.status(port, home=home)
    except LocalKafkaError as exc:
        raise _fail(exc) from None
    if st.running:
        _out.print(f"Kafka running ({_describe(st)})", soft_wrap=True)
        return
    if st.pid is not None:
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
