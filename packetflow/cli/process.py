"""``packetflow process list|show``: a topology's saga instances as their changelog says (the
current steps, timers, kept authority) and, for one, its whole history from the saga's
transitions topic (see packetflow.orchestration)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from packetflow.cli.errors import UserError, load, shared_broker_url
from packetflow.cli.operate import Format, FormatOpt, ModuleArg, with_client
from packetflow.cli.options import BrokerOpt
from packetflow.engine.client import Client
from packetflow.engine.topology import Topology
from packetflow.orchestration.agent import SagaSpec
from packetflow.orchestration.operate import (
    InstanceView,
    read_instances,
    read_transitions,
    sagas_of,
)

app = typer.Typer(help="Saga instances of a topology (packetflow.orchestration).",
                  no_args_is_help=True)  # fmt: skip
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

SagaOpt = Annotated[str | None, typer.Option("--saga", help="Only this saga's instances")]


def _sagas(module: str, saga: str | None) -> tuple[Topology, list[SagaSpec]]:
    topology = load(module)
    try:
        specs = sagas_of(topology)
    except LookupError as exc:
        raise UserError(str(exc)) from None
    if saga is not None:
        specs = [s for s in specs if s.name == saga]
        if not specs:
            known = ", ".join(s.name for s in sagas_of(topology))
            raise UserError(f"{topology.name} has no saga {saga!r} (known: {known})")
    return topology, specs


def _url(broker: str | None) -> str:
    return shared_broker_url(broker, "there is nothing to read from another process")


@app.command("list")
def list_instances(
    module: ModuleArg, saga: SagaOpt = None, fmt: FormatOpt = Format.text, broker: BrokerOpt = None
) -> None:
    """The instances the changelogs hold (as of the last commit): status, current steps."""
    topology, specs = _sagas(module, saga)
    url = _url(broker)

    async def work(client: Client) -> list[InstanceView]:
        found = []
        for spec in specs:
            found.extend(await read_instances(client.transport, topology, spec.name))
        return found

    views = with_client(url, topology, work)
    if fmt is Format.json:
        for view in views:
            sys.stdout.write(orjson.dumps(_brief(view)).decode() + "\n")
        return
    table = Table("saga", "id", "status", "current", "started (UTC)", "updated (UTC)")
    for view in views:
        d = _brief(view)
        table.add_row(d["saga"], d["id"], d["status"], ", ".join(d["current"]) or "-",
                      d["started"] or "-", d["updated"] or "-")  # fmt: skip
    out.print(table)
    err.print(f"{len(views)} instance{'s' if len(views) != 1 else ''}")


def _brief(view: InstanceView) -> dict[str, Any]:
    full = view.as_dict()
    keep = ("saga", "id", "status", "current", "started", "updated", "ended", "failure")
    return {k: full[k] for k in keep}


@app.command()
def show(
    module: ModuleArg,
    instance: Annotated[str, typer.Argument(help="The instance's id (its start intent's key)")],
    saga: SagaOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """One instance (JSON): its status, steps in flight and their timers, results, kept
    authority (token id and expiry, never the token) and its history with timestamps."""
    topology, specs = _sagas(module, saga)
    url = _url(broker)

    async def work(client: Client) -> list[InstanceView]:
        found = []
        for spec in specs:
            stored = await read_instances(client.transport, topology, spec.name)
            view = next((v for v in stored if v.id == instance), None)
            history = await read_transitions(client.transport, topology, spec, instance)
            if view is None and history:  # forgotten after it ended: its history remains
                view = InstanceView(spec.name, instance, {"status": history[-1]["event"]})
            if view is not None:
                view.transitions = history or None
                found.append(view)
        return found

    views = with_client(url, topology, work)
    if not views:
        raise UserError(f"no saga instance {instance!r} in the changelog or the transitions")
    if len(views) > 1:
        names = ", ".join(v.saga for v in views)
        raise UserError(f"{instance!r} is an instance of several sagas ({names}): pass --saga")
    out.print_json(orjson.dumps(views[0].as_dict()).decode())
