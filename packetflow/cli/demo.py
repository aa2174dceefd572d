"""Run a topology on the embedded broker with generated traffic and print what happened."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.tokens import Issuer, KeyPair, decode_token
from packetflow.engine.client import Client
from packetflow.engine.runtime.worker import Worker
from packetflow.engine.topology import Topology
from packetflow.engine.transport.memory import MemoryTransport

Traffic = Callable[..., Iterator[tuple[Intent, Context]]]

# Records no intent type accepts: the demo sends them to show the dead-letter topic at work.
MALFORMED: list[tuple[bytes, list[tuple[str, bytes]]]] = [
    (b"{not json", []),
    (b'{"account": "acct-0001"}', [("pf-type", b"orders.NoSuchIntent")]),
]


@dataclass
class DemoResult:
    sent: int
    seconds: float
    metrics: dict[str, Any]
    states: dict[str, dict[str | None, Any]]
    audit: dict[str, int]  # audit events by kind


async def run_demo(
    topology: Topology,
    traffic: Traffic,
    count: int,
    *,
    console: Console | None = None,
    chunk: int = 1000,
) -> DemoResult:
    """Run a worker on a private ``memory://`` broker, publish ``count`` intents, drain.

    The demo signs tokens with a key generated for this run, which only this run's worker
    trusts; ``traffic(count, issuer=...)`` receives an :class:`Issuer` for it when it takes one.
    """
    console = console or Console()
    transport = MemoryTransport("memory://demo", name=f"demo-{id(topology)}")
    key = KeyPair.generate("demo")
    issuer = Issuer(key, name="demo", hierarchy=topology.hierarchy)
    worker = Worker(topology, transport, security=topology.security.trusting({key.kid: key.public}))
    client = Client(transport, topology)
    started = time.perf_counter()
    takes_issuer = "issuer" in inspect.signature(traffic).parameters
    async with worker, client:
        runner = asyncio.create_task(worker.run())
        sent = 0
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("publishing intents", total=count)
            batch: list[tuple[Intent, Context | None]] = []
            items = traffic(count, issuer=issuer) if takes_issuer else traffic(count)
            issued: set[str] = set()
            for item in items:
                token = item[1].token
                if token is not None and token not in issued:
                    issued.add(token)
                    if decode_token(token).key_id == key.kid:  # not the forged ones
                        await client.record_issued(token)
                batch.append(item)
                if len(batch) >= chunk:
                    sent += len(await client.send_many(batch))
                    batch.clear()
                    progress.update(task, completed=sent)
                    await asyncio.sleep(0)  # let the worker keep up
            if batch:
                sent += len(await client.send_many(batch))
            progress.update(task, completed=sent)
            source = topology.source_topics()[0]
            for value, headers in MALFORMED:
                await client.send_raw(source, value, headers=headers)
            progress.add_task("processing", total=None)
            await worker.wait_idle(timeout=120, settle=0.2)
        worker.request_stop()
        await runner
        seconds = time.perf_counter() - started
        states = {
            name: worker.states(name) for name, spec in topology.reactors.items() if spec.stateful
        }
        for name, agent in topology.agents.items():  # agents with a main store (actors, ...)
            if agent.state is not None:
                states[name] = worker.states(name)
        audit: dict[str, int] = {}
        for event in await client.read_audit():
            audit[event["event"]] = audit.get(event["event"], 0) + 1
        return DemoResult(sent, seconds, worker.metrics.snapshot(), states, audit)


def print_summary(
    topology: Topology,
    result: DemoResult,
    console: Console,
    show_state: Mapping[str, str] | None = None,
    accounts: int = 5,
) -> None:
    m = result.metrics
    console.print(
        f"[bold]{topology.name}[/]: {result.sent} intents published, {m['consumed']} records "
        f"consumed in {result.seconds:.2f}s ({m['consumed'] / max(result.seconds, 1e-9):,.0f}/s), "
        f"{m['batches']} batches"
    )
    table = Table(title="Reactors and agents")
    for col in ("name", "kind", "topic", "processed", "errors"):
        table.add_column(col)
    for spec in topology.consumers():
        name = spec.name
        kind = getattr(spec, "kind", "reactor")
        processed, errors = str(m["processed"].get(name, 0)), str(m["errors"].get(name, 0))
        table.add_row(name, kind, spec.topic, processed, errors)
    console.print(table)
    outcomes = Table(title="Not processed (kept, with reasons)")
    outcomes.add_column("topic")
    outcomes.add_column("reason")
    outcomes.add_column("records")
    for reason, n in sorted(m.get("denied_reasons", {}).items()):
        outcomes.add_row(topology.denied_topic, reason, str(n))
    for reason, n in sorted(m["dead_lettered"].items()):
        outcomes.add_row(topology.dead_letter_topic, reason, str(n))
    console.print(outcomes)
    if result.audit:
        events = ", ".join(f"{n} {event}" for event, n in sorted(result.audit.items()))
        console.print(f"audit ({topology.audit_topic}): {events}")
    for reactor, attr in (show_state or {}).items():
        states = result.states.get(reactor, {})
        table = Table(title=f"{reactor}: first {accounts} of {len(states)} keys")
        table.add_column("key")
        table.add_column(attr)
        for key in sorted(k for k in states if k is not None)[:accounts]:
            table.add_row(key, str(getattr(states[key], attr, states[key])))
        console.print(table)


def demo_main(
    topology: Topology,
    traffic: Traffic,
    *,
    show_state: Mapping[str, str] | None = None,
    default_count: int = 20_000,
) -> None:
    """``python -m topologies.X [--count N]``: the demo entry point of an example topology."""
    parser = argparse.ArgumentParser(description=f"Run the {topology.name} demo on memory://")
    parser.add_argument("--count", type=int, default=default_count, help="intents to generate")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    console = Console()
    result = asyncio.run(run_demo(topology, traffic, args.count, console=console))
    print_summary(topology, result, console, show_state)
