"""``packetflow schedule add|list|show|cancel|pause|resume|trigger|backfill``: a topology's
schedules as their changelog says, and operating them (see packetflow.temporal)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from packetflow.cli.errors import UserError, load, shared_broker_url
from packetflow.cli.operate import Format, FormatOpt, ModuleArg, submit, with_client
from packetflow.cli.options import BrokerOpt, CapabilityOpt, PrincipalOpt, TokenOpt
from packetflow.engine.client import Client
from packetflow.engine.topology import Topology, TopologyError
from packetflow.temporal.commands import MISFIRES, OVERLAPS, Op
from packetflow.temporal.declare import Scheduler, scheduler_of
from packetflow.temporal.operate import ScheduleView, read_schedules
from packetflow.temporal.timing import Timing, after, at, cron, every, local, ms

app = typer.Typer(help="Schedules of a topology (packetflow.temporal).", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

IdArg = Annotated[str, typer.Argument(help="Schedule id")]
def _scheduler(module: str) -> tuple[Topology, Scheduler]:
    topology = load(module)
    try:
        return topology, scheduler_of(topology)
    except LookupError as exc:
        raise UserError(str(exc)) from None


def _views(module: str, broker: str | None) -> tuple[Topology, list[ScheduleView]]:
    topology, _ = _scheduler(module)
    url = shared_broker_url(broker, "there is nothing to read from another process")

    async def work(client: Client) -> list[ScheduleView]:
        return await read_schedules(client.transport, topology)

    return topology, with_client(url, topology, work)


def _one(module: str, broker: str | None, schedule_id: str) -> ScheduleView:
    _, views = _views(module, broker)
    for view in views:
        if view.id == schedule_id:
            return view
    raise UserError(f"no schedule {schedule_id!r} in the changelog (none yet, or done)")


def _send(
    topology: Topology,
    broker: str | None,
    intent: Any,
    key: str,
    topic: str,
    authority: dict[str, Any],
) -> None:
    fields = {
        "type": type(intent).intent_type,
        "data": intent.model_dump(mode="json"),
        "topic": topic,
        "key": key,
        **authority,
    }
    submit(topology, broker, fields, unseen="no worker would see it")


def _authority(
    token: str | None, capability: list[str] | None, principal: str | None
) -> dict[str, Any]:
    if token == "-":
        token = sys.stdin.read().strip()
    if token is not None and capability:
        raise UserError("give --token or --capability, not both")
    return {"token": token, "capabilities": capability or [], "principal": principal}


def _moment(text: str, tz: str, what: str) -> datetime:
    try:
        return local(text, tz)
    except ValueError:
        raise UserError(f"{what} {text!r}: write an ISO time, e.g. 2026-12-01T09:00") from None


def _timing(
    at_: str | None,
    after_: float | None,
    every_: float | None,
    cron_: str | None,
    tz: str,
    max_count: int | None,
) -> Timing:
    given = [x for x in (at_, after_, every_, cron_) if x is not None]
    if len(given) != 1:
        raise UserError("give one of --at, --after, --every or --cron")
    try:
        if at_ is not None:
            return at(_moment(at_, tz, "--at"))
        if after_ is not None:
            return after(after_)
        if every_ is not None:
            return every(every_, max_count=max_count)
        assert cron_ is not None
        return cron(cron_, tz=tz, max_count=max_count)
    except ValidationError as exc:
        raise UserError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    except ValueError as exc:
        raise UserError(str(exc).splitlines()[0]) from None


@app.command()
def add(
    module: ModuleArg,
    intent_type: Annotated[str, typer.Argument(help="Intent type to publish, e.g. b.Invoice")],
    data: Annotated[str, typer.Argument(help="Its fields as a JSON object")],
    schedule_id: Annotated[str, typer.Option("--id", help="The schedule's id")],
    at_: Annotated[str | None, typer.Option("--at", help="Once, at this time (ISO; --tz)")] = None,
    after_: Annotated[float | None, typer.Option("--after", help="Once, in seconds")] = None,
    every_: Annotated[float | None, typer.Option("--every", help="Every so many seconds")] = None,
    cron_: Annotated[str | None, typer.Option("--cron", help='e.g. "0 9 * * MON-FRI"')] = None,
    tz: Annotated[str, typer.Option(help="IANA zone of --cron and --at")] = "UTC",
    max_count: Annotated[int | None, typer.Option(help="Fire at most this many times")] = None,
    misfire: Annotated[str, typer.Option(help="coalesce, fire_all or skip")] = "coalesce",
    overlap: Annotated[
        str, typer.Option(help="allow_all, skip or buffer_one: while a firing is unanswered")
    ] = "allow_all",
    token: TokenOpt = None,
    capability: CapabilityOpt = None,
    principal: PrincipalOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Create (or replace) a schedule publishing TYPE with DATA, with the authority of the
    token (schedule: on the intent's resource, and the intent's own requirements)."""
    topology, schedules = _scheduler(module)
    timing = _timing(at_, after_, every_, cron_, tz, max_count)
    if misfire not in MISFIRES:
        raise UserError(f"--misfire must be one of {', '.join(MISFIRES)}")
    if overlap not in OVERLAPS:
        raise UserError(f"--overlap must be one of {', '.join(OVERLAPS)}")
    try:
        cls = topology.intent_type(intent_type)
        fields = orjson.loads(data)
        intent = cls.model_validate(fields)
    except TopologyError as exc:
        raise UserError(str(exc)) from None
    except orjson.JSONDecodeError as exc:
        raise UserError(f"DATA: invalid JSON ({exc})") from None
    except ValidationError as exc:
        raise UserError(f"DATA: {exc.errors()[0]['msg']} ({intent_type})") from None
    created = schedules.create(
        intent, timing, id=schedule_id, misfire=misfire, overlap=overlap  # type: ignore[arg-type]
    )
    _send(topology, broker, created, schedule_id, schedules.topic,
          _authority(token, capability, principal))  # fmt: skip
    err.print(f"sent schedule {schedule_id}: {timing.describe()}")


@app.command("list")
def list_schedules(
    module: ModuleArg, fmt: FormatOpt = Format.text, broker: BrokerOpt = None
) -> None:
    """The schedules the changelog knows (as of the last commit), with their next time."""
    _, views = _views(module, broker)
    if fmt is Format.json:
        for view in views:
            sys.stdout.write(orjson.dumps(view.as_dict(1)).decode() + "\n")
        return
    table = Table("id", "intent", "when", "status", "times passed", "next (UTC)")
    for v in views:
        d = v.as_dict(1)
        nxt = d["next"][0]["utc"] if d["next"] else "-"
        table.add_row(v.id, d["intent_type"], d["when"], d["status"], str(d["passed"]), nxt)
    out.print(table)
    err.print(f"{len(views)} schedule{'s' if len(views) != 1 else ''}")


@app.command()
def show(
    module: ModuleArg,
    schedule_id: IdArg,
    count: Annotated[int, typer.Option("--next", help="How many next times to print")] = 5,
    broker: BrokerOpt = None,
) -> None:
    """One schedule (JSON): what it publishes, when, its kept authority (token id and
    expiry, never the token) and its next times in its zone and in UTC."""
    if count < 1:
        raise UserError("--next must be at least 1")
    out.print_json(orjson.dumps(_one(module, broker, schedule_id).as_dict(count)).decode())


def _operate(
    op: Op,
    module: str,
    schedule_id: str,
    authority: dict[str, Any],
    broker: str | None,
    **fields: Any,
) -> None:
    topology, schedules = _scheduler(module)
    view = _one(module, broker, schedule_id)
    command = schedules.command(op, schedule_id, view.raw["resource"], **fields)
    _send(topology, broker, command, schedule_id, schedules.topic, authority)
    err.print(f"sent {op} to schedule {schedule_id}")


@app.command()
def cancel(module: ModuleArg, schedule_id: IdArg, token: TokenOpt = None,
           capability: CapabilityOpt = None, principal: PrincipalOpt = None,
           broker: BrokerOpt = None) -> None:  # fmt: skip
    """Cancel a schedule: it never fires again."""
    _operate("cancel", module, schedule_id, _authority(token, capability, principal), broker)


@app.command()
def pause(module: ModuleArg, schedule_id: IdArg,
          note: Annotated[str, typer.Option(help="Why (shown by show)")] = "",
          token: TokenOpt = None, capability: CapabilityOpt = None, principal: PrincipalOpt = None,
          broker: BrokerOpt = None) -> None:  # fmt: skip
    """Pause a schedule: no firings until resumed (those due meanwhile are not made up)."""
    _operate("pause", module, schedule_id, _authority(token, capability, principal), broker,
             note=note)  # fmt: skip


@app.command()
def resume(module: ModuleArg, schedule_id: IdArg, token: TokenOpt = None,
           capability: CapabilityOpt = None, principal: PrincipalOpt = None,
           broker: BrokerOpt = None) -> None:  # fmt: skip
    """Resume a paused schedule from its next time after now."""
    _operate("resume", module, schedule_id, _authority(token, capability, principal), broker)


@app.command()
def trigger(module: ModuleArg, schedule_id: IdArg, token: TokenOpt = None,
            capability: CapabilityOpt = None, principal: PrincipalOpt = None,
            broker: BrokerOpt = None) -> None:  # fmt: skip
    """Fire a schedule once now (its times go on as before)."""
    _operate("trigger", module, schedule_id, _authority(token, capability, principal), broker)


@app.command()
def backfill(
    module: ModuleArg,
    schedule_id: IdArg,
    start: Annotated[str, typer.Option("--from", help="ISO time (--tz)")],
    end: Annotated[str, typer.Option("--to", help="ISO time (--tz)")],
    tz: Annotated[str, typer.Option(help="IANA zone of --from and --to")] = "UTC",
    token: TokenOpt = None,
    capability: CapabilityOpt = None,
    principal: PrincipalOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Fire each time the schedule had between --from and --to (at most 1,000), with the
    ids they have on schedule (a consumer recognises one it already took)."""
    first, last = ms(_moment(start, tz, "--from")), ms(_moment(end, tz, "--to"))
    if last < first:
        raise UserError("--to comes before --from")
    _operate("backfill", module, schedule_id, _authority(token, capability, principal), broker,
             start=first, end=last)  # fmt: skip
