"""The ``packetflow`` command: run workers, publish intents, describe topologies, manage Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import Progress

from packetflow.cli import actors, caps, intent, kafka, mcp, operate, process, schedule, top
from packetflow.cli.demo import print_summary, run_demo
from packetflow.cli.errors import (
    UserError,
    broker_url,
    describe,
    load,
    load_with_module,
    safe_url,
    shared_broker_url,
)
from packetflow.cli.options import (
    BrokerOpt,
    CapabilityOpt,
    KeyOpt,
    PrincipalOpt,
    TokenOpt,
    TopicOpt,
    TopologyOpt,
)
from packetflow.cli.render import as_mermaid, as_text
from packetflow.cli.watchdog import watch_the_loop
from packetflow.engine.client import AskTimeout, Client, RequestRefused
from packetflow.engine.describe import as_json
from packetflow.engine.ingress import IngressError, Submission, hopeless, submission
from packetflow.engine.runtime.services import WorkerService
from packetflow.engine.runtime.tracing import Tracing
from packetflow.engine.runtime.worker import Worker
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.transport import BrokerError
from packetflow.observability.logs import configure_logging

app = typer.Typer(
    name="packetflow",
    help="PacketFlow: typed intents, capabilities and reactors on Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topology_app = typer.Typer(help="Describe topologies.", no_args_is_help=True)
app.add_typer(topology_app, name="topology")
app.add_typer(kafka.app, name="kafka")
app.add_typer(caps.app, name="caps")
app.add_typer(actors.app, name="actors")
app.add_typer(schedule.app, name="schedule")
app.add_typer(process.app, name="process")
app.add_typer(mcp.app, name="mcp")
app.command()(top.top)
app.command()(top.inspect)
app.command("intent")(intent.intent)

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


_debug = False


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback behind an error message")
    ] = False,
) -> None:
    global _debug
    _debug = debug


# -- worker ------------------------------------------------------------------------------


@app.command()
def worker(
    module: Annotated[
        str, typer.Argument(help="Module holding the topology (pkg.mod or pkg.mod:attr)")
    ],
    broker: BrokerOpt = None,
    max_batch: Annotated[int, typer.Option(help="Most records fetched per batch")] = 5000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    instance_id: Annotated[
        str | None,
        typer.Option(
            envvar="PACKETFLOW_INSTANCE_ID",
            help="This worker's stable name among the topology's: restarted with the same id "
            "it takes its partitions back at once (static membership); exactly-once: it also "
            "aborts what the previous run left open",
        ),
    ] = None,
    hang_limit: Annotated[
        float,
        typer.Option(
            help="Seconds the worker may be stuck (a reactor that never returns) before it "
            "exits, so a supervisor restarts it and the crash-loop breaker can act; 0: never",
        ),
    ] = 120.0,
    state_dir: Annotated[
        str | None,
        typer.Option(
            envvar="PACKETFLOW_STATE_DIR",
            help="Keep keyed state on disk in this directory (RocksDB) instead of in memory: "
            "for state larger than memory; a restarted worker replays only the changelog's "
            "tail",
        ),
    ] = None,
    http: Annotated[
        str | None,
        typer.Option(
            help="Serve HTTP on host:port too (intents, state, live feeds, the dashboard, "
            "/metrics, /health, MCP at /mcp): e.g. 127.0.0.1:8080",
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Serve /metrics (Prometheus) and /health on host:port, without --http: "
            "e.g. 127.0.0.1:9464",
        ),
    ] = None,
    log_format: Annotated[str, typer.Option(help="text, or json (one object a line)")] = "text",
    otel: Annotated[
        bool,
        typer.Option(
            "--otel",
            help="Trace with OpenTelemetry, exported over OTLP (also on when "
            "$OTEL_EXPORTER_OTLP_ENDPOINT is set; needs pip install 'packetflow[otel]')",
        ),
    ] = False,
) -> None:
    """Run a worker: consume the topology's topics, run its reactors, until SIGINT/SIGTERM."""
    try:
        configure_logging(log_level, log_format)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    topology = load(module)
    url = broker_url(broker)
    if url.startswith("memory://"):
        err.print(
            "note: memory:// lives inside this process; only intents sent from it are seen. "
            "Use --broker kafka://host:port to share work.",
            soft_wrap=True,
        )
    try:
        services: list[WorkerService] = []
        if http:
            # only a worker that serves HTTP loads the web and MCP interfaces
            from packetflow.mcp import McpMount
            from packetflow.web import HttpService

            services.append(HttpService(http, mounts=[McpMount()]))
        if metrics:
            from packetflow.observability import MetricsService

            services.append(MetricsService(metrics))
        w = Worker(
            topology, url, max_batch=max_batch, instance_id=instance_id, state_dir=state_dir,
            services=services, tracing=_tracing(otel),
        )  # fmt: skip
    except ValueError as exc:  # a topology that cannot run (TopologyError is a ValueError)
        raise UserError(str(exc)) from exc
    asyncio.run(_run_worker(w, hang_limit))


def _tracing(flag: bool) -> Tracing | None:
    """OpenTelemetry tracing, when asked for (``--otel`` or an OTLP endpoint set)."""
    if not flag and not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    try:
        from packetflow.observability.tracing import OtelTracing
    except ImportError:
        raise UserError("--otel needs OpenTelemetry: pip install 'packetflow[otel]'") from None
    try:
        return OtelTracing.from_environment()
    except RuntimeError as exc:
        raise UserError(str(exc)) from None


async def _run_worker(w: Worker, hang_limit: float) -> None:
    topology, url = w.topology, w.transport.url
    try:
        await w.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await w.stop()
        raise UserError(f"cannot start worker on {url}: {describe(exc)}") from exc
    w.handle_signals()
    if hang_limit > 0:
        watch_the_loop(hang_limit)
    # What the process holds once started (modules, models, the topology, restored state)
    # lives as long as it does: out of the collector's sight, every full collection the
    # batch loop triggers scans only what came since (see the README's performance section).
    gc.collect()
    gc.freeze()
    log = logging.getLogger("packetflow.worker")
    log.info(
        "running %s (%s, instance %s): %s on %s; Ctrl-C to stop",
        topology.name,
        topology.processing_guarantee.replace("_", "-"),
        w.instance_id,
        ", ".join(c.name for c in topology.consumers()),
        ", ".join(topology.source_topics()),
    )
    reporter = asyncio.create_task(_report(w, log))
    fenced = False
    try:
        await w.run()
    except BrokerError as exc:  # fatal: the worker has said why in its log
        if not exc.fatal:
            raise
        fenced = True
    finally:
        reporter.cancel()
        with contextlib.suppress(Exception):  # a fenced worker cannot commit: it just leaves
            await w.stop()
        log.info("final counts: %s", orjson.dumps(w.metrics.snapshot()).decode())
    if fenced:
        raise SystemExit(1)


async def _report(w: Worker, log: logging.Logger, every: float = 10.0) -> None:
    last, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(every)
        now, consumed = time.monotonic(), w.metrics.consumed
        if consumed != last:
            log.info("consumed %d records (%.0f/s)", consumed, (consumed - last) / (now - last_t))
        last, last_t = consumed, now


# -- send --------------------------------------------------------------------------------


@app.command()
def send(
    intent_type: Annotated[
        str | None, typer.Argument(help="Intent type name, e.g. orders.Deposit")
    ] = None,
    data: Annotated[str | None, typer.Argument(help="The intent's fields as a JSON object")] = None,
    topology_spec: TopologyOpt = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help='JSON lines: {"type": ..., "data": {...}, "token": "..."}; - for stdin',
        ),
    ] = None,
    token: TokenOpt = None,
    capability: CapabilityOpt = None,
    principal: PrincipalOpt = None,
    key: KeyOpt = None,
    topic: TopicOpt = None,
    deadline: Annotated[
        float | None, typer.Option(help="Seconds from now until the intent expires")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Send even what the topology can only refuse (no token for a signed-only "
            "topology, an expired token, a deadline in the past, an internal intent type)",
        ),
    ] = False,
    broker: BrokerOpt = None,
) -> None:
    """Publish intents: one from arguments, or many from a JSON-lines file."""
    topology, url = _target(topology_spec, broker)
    if token == "-" and file is not None and str(file) == "-":
        raise UserError("--token - and --file - cannot both read stdin")
    defaults = _defaults(token, capability, principal, key, topic)
    if file is not None:
        if intent_type is not None:
            raise UserError("give either TYPE [DATA] or --file, not both")
        items = _read_lines(topology, file, defaults, deadline)
    else:
        if intent_type is None:
            raise UserError("give an intent type and its JSON data, or --file FILE")
        line = {"type": intent_type, "data": _json(data or "{}", "DATA"), **defaults}
        items = [_item(topology, line, "arguments", deadline)]
    if not force:
        _refuse_hopeless(topology, items)
    # Without logging configured, aiokafka's connection errors reach stderr through logging's
    # last-resort handler, next to our own one-line error that already names the cause.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    asyncio.run(_send_all(topology, url, items))


def _target(topology_spec: str | None, broker: str | None) -> tuple[Topology, str]:
    """The topology and the broker URL a send or an ask goes to."""
    if topology_spec is None:
        raise UserError("name the topology with --topology MODULE (or set PACKETFLOW_TOPOLOGY)")
    topology = load(topology_spec)
    return topology, shared_broker_url(broker, "nothing would consume what this command sends")


def _defaults(
    token: str | None,
    capability: list[str] | None,
    principal: str | None,
    key: str | None,
    topic: str | None,
) -> dict[str, Any]:
    """What every intent sent by one command carries (``--token -``: read from stdin)."""
    if token == "-":
        token = sys.stdin.read().strip()
    if token is not None and capability:
        raise UserError("give --token or --capability, not both")
    return {
        "capabilities": capability or [],
        "token": token,
        "principal": principal,
        "key": key,
        "topic": topic,
    }


# -- ask ---------------------------------------------------------------------------------


@app.command()
def ask(
    intent_type: Annotated[str, typer.Argument(help="Intent type name, e.g. shop.ShowCart")],
    data: Annotated[str | None, typer.Argument(help="The intent's fields as a JSON object")] = None,
    topology_spec: TopologyOpt = None,
    token: TokenOpt = None,
    capability: CapabilityOpt = None,
    principal: PrincipalOpt = None,
    key: KeyOpt = None,
    topic: TopicOpt = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the reply (also the request's deadline)")
    ] = 10.0,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Ask even what the topology can only refuse (to see how it refuses)"
        ),
    ] = False,
    broker: BrokerOpt = None,
) -> None:
    """Send one intent as a request and print its reply as JSON (a reactor's or actor's
    ``reply(...)``). Exits 1 when the workers refused it (denied, dead-lettered: why) or
    no reply came within --timeout."""
    if timeout <= 0:
        raise UserError("--timeout takes seconds, > 0")
    topology, url = _target(topology_spec, broker)
    line = {
        "type": intent_type,
        "data": _json(data or "{}", "DATA"),
        **_defaults(token, capability, principal, key, topic),
    }
    item = _item(topology, line, "arguments", None)
    if not force:
        _refuse_hopeless(topology, [item])
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    asyncio.run(_ask(topology, url, item, timeout))


async def _ask(topology: Topology, url: str, item: Submission, timeout: float) -> None:
    try:
        async with Client(url, topology) as client:
            answer = await client.ask(
                item.intent, context=item.context, timeout=timeout, key=item.key, topic=item.topic
            )
    except RequestRefused as exc:
        err.print(f"refused: {exc.reason}: {exc.error}")
        raise typer.Exit(1) from None
    except AskTimeout as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    except TopologyError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        raise UserError(f"cannot ask on {safe_url(url)}: {describe(exc)}") from exc
    out.print_json(
        orjson.dumps({"type": answer.intent_type, "data": answer.model_dump(mode="json")}).decode()
    )


def _json(text: str, where: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{where}: invalid JSON ({exc})") from None


def _read_lines(
    topology: Topology, file: Path, defaults: dict[str, Any], deadline: float | None
) -> list[Submission]:
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror}") from None
    items = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        line = _json(raw, f"{file}:{n}")
        if not isinstance(line, dict) or "type" not in line:
            raise UserError(f'{file}:{n}: expected an object with "type" and "data"')
        own = {k: v for k, v in line.items() if v is not None}
        base = defaults
        if "token" in own or "capabilities" in own:  # a line's own authority replaces the default
            base = {**defaults, "token": None, "capabilities": []}
        merged = {**base, **own}
        items.append(_item(topology, merged, f"{file}:{n}", deadline))
    if not items:
        raise UserError(f"{file}: no intents in it")
    return items


def _item(
    topology: Topology, line: dict[str, Any], where: str, deadline: float | None
) -> Submission:
    try:
        return submission(topology, line, deadline=deadline)
    except IngressError as exc:
        raise UserError(f"{where}: {exc}") from None


# how each refusal reads on the command line (see ingress.hopeless)
_CLI_WORDING = {
    "internal": "{} (--force sends it anyway)",
    "deadline": "{} (--deadline takes seconds from now, > 0; --force sends it anyway)",
    "no-token": "{}: pass --token (packetflow caps issue ...) or --force",
    "expired": "{} (--force sends it anyway)",
    "principal-mismatch": "--{}",
}


def _refuse_hopeless(topology: Topology, items: list[Submission]) -> None:
    """Refuse sends the topology's workers can only deny or dead-letter (``--force`` sends
    them anyway, e.g. to test that they are refused)."""
    now = time.time()
    for item in items:
        why = hopeless(topology, item, now)
        if why is not None:
            raise UserError(_CLI_WORDING.get(why.code, "{}").format(why.message))


async def _send_all(topology: Topology, url: str, items: list[Submission]) -> None:
    try:
        async with Client(url, topology) as client:
            with Progress(console=err, transient=True, disable=len(items) < 1000) as progress:
                task = progress.add_task("sending", total=len(items))
                futures = []
                for item in items:
                    futures.append(
                        await client.enqueue(
                            item.intent, context=item.context, key=item.key, topic=item.topic
                        )
                    )
                    progress.advance(task)
                deliveries = [await ack for ack in futures]
    except TopologyError as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        raise UserError(f"cannot send to {safe_url(url)}: {describe(exc)}") from exc
    if len(deliveries) == 1:
        d = deliveries[0]
        out.print(
            f"sent {items[0].intent.intent_type} to {d.topic}[{d.partition}] at offset {d.offset}"
        )
    else:
        topics = sorted({d.topic for d in deliveries})
        out.print(f"sent {len(deliveries)} intents to {', '.join(topics)}")


# -- topology ----------------------------------------------------------------------------


@topology_app.command("show")
def topology_show(
    module: Annotated[str, typer.Argument(help="Module holding the topology")],
    format: Annotated[str, typer.Option("--format", help="text, mermaid or json")] = "text",
) -> None:
    """Print a topology's topics, reactors, intent types and required capabilities."""
    renderers = {"text": as_text, "mermaid": as_mermaid, "json": as_json}
    if format not in renderers:
        raise UserError(f"unknown format {format!r}: use text, mermaid or json")
    print(renderers[format](load(module)))


# -- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    module: Annotated[str, typer.Argument(help="Module with a topology and generate_traffic(n)")],
    count: Annotated[int, typer.Option(help="Intents to generate")] = 20_000,
) -> None:
    """Run a topology on the embedded broker with its generated traffic and print a summary.

    A module with its own ``demo(count)`` (e.g. one that simulates on virtual time) runs that.
    """
    topology, mod = load_with_module(module)
    if count < 1:
        raise UserError("--count must be at least 1")
    own = getattr(mod, "demo", None)
    if callable(own):
        own(count)
        return
    traffic = getattr(mod, "generate_traffic", None)
    if traffic is None:
        raise UserError(f"{module} has no generate_traffic(count) or demo(count) function")
    result = asyncio.run(run_demo(topology, traffic, count, console=out))
    print_summary(topology, result, out, getattr(mod, "DEMO_STATE", None))


operate.register(app)  # after the commands above, so that help lists them first


def main() -> None:
    """Console entry point: user errors print one line and exit 2."""
    try:
        app()
    except UserError as exc:
        if _debug and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise SystemExit(2) from None
