"""``packetflow top MODULE`` (every second, until Ctrl-C) and ``packetflow inspect MODULE``
(once, or as JSON): the whole group of workers, from the members topic."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Annotated

import orjson
import typer
from rich.console import Group as Stack
from rich.live import Live
from rich.table import Table

from packetflow.cli.errors import UserError, load, shared_broker_url
from packetflow.cli.operate import Format, FormatOpt, ModuleArg, out, with_client
from packetflow.cli.options import BrokerOpt
from packetflow.engine.client import Client
from packetflow.engine.topology import Topology
from packetflow.observability.group import Group, read_members


def _render(topology: Topology, group: Group) -> Stack:
    reactors = Table("reactor / agent", "processed", "per s", "errors", "dropped",
                     title=f"{topology.name}: {len(group.members)} worker(s)")  # fmt: skip
    for name in group.reactors:
        rate = group.rates.get(name)
        reactors.add_row(name, str(group.processed[name]), "-" if rate is None else f"{rate:.0f}",
                         str(group.errors[name]), str(group.dropped[name]))  # fmt: skip
    workers = Table("worker", "host", "pid", "partitions", "lag", "buffered", "age s")
    now = time.time()
    for m in sorted(group.members.values(), key=lambda m: m.instance_id):
        workers.add_row(m.instance_id, m.host, str(m.pid),
                        str(sum(len(p) for p in m.partitions.values())), str(m.lag),
                        str(m.buffered), f"{max(0.0, now - m.at):.0f}")  # fmt: skip
    aside = Table("set aside", "reason", "records")
    for kind, counts in (("dead letters", group.dead_lettered), ("denied", group.denied)):
        for reason, n in sorted(counts.items()):
            aside.add_row(kind, reason, str(n))
    return Stack(reactors, workers, aside)


async def _look(client: Client, topology: Topology, before: Group | None) -> Group:
    names = [s.name for s in topology.consumers()]
    return Group.of(await read_members(client), names, before)


def top(
    module: ModuleArg,
    broker: BrokerOpt = None,
    refresh: Annotated[float, typer.Option(help="Seconds between looks")] = 1.0,
) -> None:
    """The group's workers live: per reactor and agent throughput, errors, drops; per worker
    partitions, lag and buffers; what was set aside by reason (from the members topic)."""
    if refresh <= 0:
        raise UserError("--refresh must be positive")
    topology = load(module)
    url = shared_broker_url(broker, "top reads what the workers announce")

    async def run(client: Client) -> None:
        group = await _look(client, topology, None)
        with Live(_render(topology, group), console=out, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(refresh)
                group = await _look(client, topology, group)
                live.update(_render(topology, group), refresh=True)

    with_client(url, topology, run)


def inspect(module: ModuleArg, fmt: FormatOpt = Format.text, broker: BrokerOpt = None) -> None:
    """What top shows, once (--format json for tools)."""
    topology = load(module)
    url = shared_broker_url(broker, "inspect reads what the workers announce")
    group = with_client(url, topology, lambda client: _look(client, topology, None))
    if fmt is Format.json:
        sys.stdout.write(orjson.dumps(group.as_dict()).decode() + "\n")
        return
    out.print(_render(topology, group))
