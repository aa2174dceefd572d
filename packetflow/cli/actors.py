"""``packetflow actors list|show|start``: actors as their changelogs say, and starting a
stopped one (see packetflow.actors.operate)."""

from __future__ import annotations

import sys
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from packetflow.actors.operate import ActorControl, ActorView, actor_types, read_actors
from packetflow.cli.errors import UserError, load, shared_broker_url
from packetflow.cli.operate import Format, FormatOpt, ModuleArg, submit, with_client
from packetflow.cli.options import BrokerOpt
from packetflow.engine.client import Client
from packetflow.engine.topology import Topology

app = typer.Typer(help="Inspect and operate actors (packetflow.actors).", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

TypeArg = Annotated[str, typer.Argument(help="Actor type (the actor function's name)")]
IdArg = Annotated[str, typer.Argument(help="Actor id (its messages' key)")]


def _views(
    module: str, broker: str | None, actor_type: str | None
) -> tuple[Topology, list[ActorView]]:
    topology = load(module)
    _check_type(topology, actor_type)
    url = shared_broker_url(broker, "there is nothing to read from another process")

    async def work(client: Client) -> list[ActorView]:
        return await read_actors(client.transport, topology, actor_type)

    return topology, with_client(url, topology, work)


def _check_type(topology: Topology, actor_type: str | None) -> None:
    types = actor_types(topology)
    if not types:
        raise UserError(f"topology {topology.name} declares no actors")
    if actor_type is not None and actor_type not in types:
        raise UserError(
            f"topology {topology.name} has no actor type {actor_type!r} "
            f"(actor types: {', '.join(types)})"
        )


def _line(view: ActorView) -> None:
    sys.stdout.write(orjson.dumps(view.as_dict()).decode() + "\n")


@app.command("list")
def list_actors(
    module: ModuleArg,
    actor_type: Annotated[
        str | None, typer.Option("--type", help="Only actors of this type")
    ] = None,
    fmt: FormatOpt = Format.text,
    broker: BrokerOpt = None,
) -> None:
    """The actors the changelogs know (as of the last commit): status, asks, reminders."""
    _, views = _views(module, broker, actor_type)
    if fmt is Format.json:
        for view in views:
            _line(view)
        return
    table = Table("type", "id", "status", "asks", "reminders", "state")
    for v in views:
        status = v.status + (f" ({v.waiting} waiting)" if v.waiting else "")
        state = orjson.dumps(v.as_dict()["state"]).decode()
        table.add_row(
            v.actor_type, v.actor, status, str(len(v.asks)), ", ".join(v.reminders),
            state if len(state) <= 60 else state[:57] + "...",
        )  # fmt: skip
    out.print(table)
    err.print(f"{len(views)} actor{'s' if len(views) != 1 else ''}")


@app.command()
def show(
    module: ModuleArg,
    actor_type: TypeArg,
    actor_id: IdArg,
    broker: BrokerOpt = None,
) -> None:
    """One actor: its state, supervision status, pending asks and reminders (JSON)."""
    _, views = _views(module, broker, actor_type)
    for view in views:
        if view.actor == actor_id:
            out.print_json(orjson.dumps(view.as_dict()).decode())
            return
    raise UserError(f"no actor {actor_type}/{actor_id} in the changelogs (none yet, or ended)")


@app.command()
def start(
    module: ModuleArg,
    actor_type: TypeArg,
    actor_id: IdArg,
    token: Annotated[
        str | None,
        typer.Option("--token", "-T", help="A token granting operate:actor/<type>/<id>"),
    ] = None,
    capability: Annotated[
        list[str] | None,
        typer.Option("--capability", "-c", help="Unsigned capability (allow_unsigned only)"),
    ] = None,
    broker: BrokerOpt = None,
) -> None:
    """Start a stopped actor again: its next messages are handled (an operator command,
    checked against the token like any intent)."""
    topology = load(module)
    _check_type(topology, actor_type)
    fields = {
        "type": ActorControl.intent_type,
        "data": {"actor_type": actor_type, "actor": actor_id, "command": "start"},
        "token": token,
        "capabilities": capability or [],
        "topic": topology.agents[actor_type].topic,
        "key": actor_id,
    }
    submit(topology, broker, fields, unseen="no worker would see the command")
    err.print(f"sent start to {actor_type}/{actor_id}")
