"""``packetflow tail``, ``set-aside`` and ``replay``: see what flows and what was set aside,
and send it through again once its cause is fixed. Token values are never printed, only
their id, holder and grants (:mod:`packetflow.engine.inspect`)."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from packetflow.cli.errors import UserError, describe, load, safe_url, shared_broker_url
from packetflow.cli.options import BrokerOpt
from packetflow.core.tokens import TokenError, decode_token
from packetflow.engine.client import Client, Received
from packetflow.engine.ingress import IngressError, submission
from packetflow.engine.inspect import as_line, safe_text
from packetflow.engine.inspect import describe as describe_record
from packetflow.engine.replay import KINDS, SKIP_REASONS, ReplaySelection
from packetflow.engine.setaside import summarise
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.transport import BEGINNING, END, StartAt

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

T = TypeVar("T")


class Format(StrEnum):
    text = "text"
    json = "json"


ModuleArg = Annotated[
    str, typer.Argument(help="Module holding the topology, e.g. topologies.orders")
]
FormatOpt = Annotated[Format, typer.Option("--format", help="text, or json (one object a line)")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Only records from then on: an ISO time or an age like 30s, 15m, 2h, 1d"
    ),
]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Only this reason (e.g. expired)")]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> int:
    """An ISO 8601 time (UTC when it names no zone) or an age ago, as epoch milliseconds."""
    age = _AGE.match(text.strip())
    if age:
        now = time.time() if now is None else now
        return max(int((now - float(age.group(1)) * _SECONDS[age.group(2)]) * 1000), 0)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(
            f"time {text!r}: expected an ISO time (2026-11-30T12:00:00Z) or an age (15m, 2h)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise UserError(f"time {text!r} is before 1970: Kafka keeps no record of it")
    return ms


def parse_start(text: str | None, follow: bool) -> StartAt:
    """``--from``: beginning, end, an offset (in every partition) or a time; by default the
    beginning, or the end when following."""
    if text is None:
        return END if follow else BEGINNING
    if text == "beginning":
        return BEGINNING
    if text == "end":
        return END
    if re.fullmatch(r"[0-9]{1,18}", text):
        return StartAt(offset=int(text))
    return StartAt(time_ms=parse_time(text))


def parse_offsets(text: str) -> tuple[int | None, int, int]:
    """``--offsets``: ``A-B`` (in every partition) or ``P:A-B`` (in partition P), inclusive."""
    match = re.fullmatch(r"(?:(\d+):)?(\d+)-(\d+)", text.strip())
    if match is None or int(match.group(2)) > int(match.group(3)):
        raise UserError(
            f"--offsets {text!r}: expected FIRST-LAST (e.g. 10-20) or PARTITION:FIRST-LAST, "
            "with FIRST <= LAST"
        )
    partition = int(match.group(1)) if match.group(1) is not None else None
    return partition, int(match.group(2)), int(match.group(3))


def topic_name(topology: Topology, name: str) -> str:
    """A topic of the topology by its logical name, or the short name of an engine topic
    (``dead-letters`` for ``<topology>.dead-letters``)."""
    prefix = f"{topology.name}."
    declared = set(topology.topics)
    engine = topology.internal_topics()
    if name in declared or name in engine:
        return name
    if prefix + name in engine:
        return prefix + name
    shown = sorted(declared - engine) + sorted(t.removeprefix(prefix) for t in engine)
    raise UserError(
        f"topology {topology.name} has no topic {name!r}; its topics: {', '.join(shown)}"
    )


def submit(
    topology: Topology, broker: str | None, fields: dict[str, Any], *, unseen: str
) -> None:
    """Send one intent an operating command built (``fields`` as ingress.submission takes
    them: type, data, authority, topic, key); ``unseen``: why a broker of this process's
    own would not do (``memory://``)."""
    try:
        sub = submission(topology, fields)
    except IngressError as exc:
        raise UserError(str(exc)) from None
    url = shared_broker_url(broker, unseen)

    async def work(client: Client) -> None:
        await client.send(sub.intent, context=sub.context, topic=sub.topic, key=sub.key)

    with_client(url, topology, work)


def with_client(url: str, topology: Topology, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a started client; broker trouble is one line, Ctrl-C a quiet stop."""
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())

    async def main() -> T:
        async with Client(url, topology) as client:
            return await work(client)

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except (UserError, typer.Exit):
        raise
    except TopologyError as exc:
        raise UserError(str(exc)) from None
    except LookupError as exc:
        raise UserError(f"{exc}: a worker creates the topology's topics as it starts") from None
    except Exception as exc:
        raise UserError(f"{safe_url(url)}: {describe(exc)}") from exc


def _show(received: Received, topic: str, fmt: Format) -> None:
    described = describe_record(received, topic)
    if fmt is Format.json:
        sys.stdout.write(orjson.dumps(described).decode() + "\n")
        sys.stdout.flush()
    else:
        out.print(as_line(described), markup=False)


def tail(
    module: ModuleArg,
    topic: Annotated[
        str, typer.Argument(help="Topic, e.g. accounts, ledger, dead-letters or denied")
    ],
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="beginning, end, OFFSET (in every partition) or TIME (ISO, or an age like "
            "15m); default: beginning, or end with --follow",
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing records as they arrive")
    ] = False,
    key: Annotated[str | None, typer.Option("--key", help="Only records with this key")] = None,
    intent_type: Annotated[
        str | None, typer.Option("--type", help="Only intents of this type")
    ] = None,
    fmt: FormatOpt = Format.text,
    broker: BrokerOpt = None,
) -> None:
    """Print a topic's records decoded, set-aside ones with why (tokens never printed)."""
    topology = load(module)
    name = topic_name(topology, topic)
    where = parse_start(start, follow)
    url = shared_broker_url(broker, "there is nothing to read from another process")

    async def work(client: Client) -> int:
        shown = 0
        async for received in client.tail(
            name, start=where, follow=follow, key=key, intent_type=intent_type
        ):
            _show(received, name, fmt)
            shown += 1
        return shown

    shown = with_client(url, topology, work)
    if fmt is Format.text:
        err.print(f"{shown} record{'s' if shown != 1 else ''} on {name}")


def set_aside(
    module: ModuleArg,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", help=f"Set-aside topic(s): {', '.join(KINDS)} (default: all)"),
    ] = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    show: Annotated[
        int, typer.Option("--show", min=0, help="Also print the first N records")
    ] = 0,
    fmt: FormatOpt = Format.text,
    broker: BrokerOpt = None,
) -> None:
    """Count what was set aside by reason, reactor and source topic (--show N: records)."""
    topology = load(module)
    kinds = topic or list(KINDS)
    for kind in kinds:
        if kind not in KINDS:
            raise UserError(f"--topic {kind!r}: one of {', '.join(KINDS)}")
    since_ms = parse_time(since) if since else None
    url = shared_broker_url(broker, "there is nothing to read from another process")

    async def work(client: Client) -> list[tuple[str, Received]]:
        found: list[tuple[str, Received]] = []
        for kind in kinds:
            name = client.set_aside_topic(kind)
            start = BEGINNING if since_ms is None else StartAt(time_ms=since_ms)
            try:
                async for received in client.tail(name, start=start):
                    facts = received.set_aside
                    if reason is None or (facts is not None and facts.reason == reason):
                        found.append((kind, received))
            except LookupError:
                continue  # not created yet: no worker has run, nothing was set aside
        return found

    found = with_client(url, topology, work)
    rows = summarise((kind, r.record) for kind, r in found)
    if fmt is Format.json:
        for row in rows:
            seen = {"first_seen": _iso(row.first_ms), "last_seen": _iso(row.last_ms)}
            fields = {
                k: safe_text(v, 1000) if isinstance(v, str) else v
                for k, v in {**row.__dict__, **seen}.items()
            }
            sys.stdout.write(orjson.dumps(fields).decode() + "\n")
        for kind, received in found[:show]:
            sys.stdout.write(orjson.dumps(describe_record(received, kind)).decode() + "\n")
        return
    if not rows:
        having = f" with reason {reason}" if reason else ""
        out.print(f"nothing set aside on {', '.join(kinds)}{having}", markup=False)
        return
    table = Table("topic", "reason", "reactor", "source", "count", "first seen", "last seen")
    for column in table.columns:
        column.no_wrap = True
    for row in rows:
        cells = (row.topic, row.reason, row.reactor or "-", row.source_topic or "-")
        table.add_row(  # Text: what a record says is never read as markup
            *(Text(safe_text(cell, 80)) for cell in cells),
            str(row.count), _iso(row.first_ms), _iso(row.last_ms),
        )
    # piped or in a narrow terminal, the table keeps its rows whole rather than wrap them
    Console(highlight=False, width=max(out.width, 160) if not out.is_terminal else None).print(
        table
    )
    for kind, received in found[:show]:
        out.print(as_line(describe_record(received, kind)), markup=False)


def replay(
    module: ModuleArg,
    kind: Annotated[
        str, typer.Option("--from", help=f"Set-aside topic: {', '.join(KINDS)}")
    ] = "dead-letters",
    reason: ReasonOpt = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Only records read first from this topic")
    ] = None,
    offsets: Annotated[
        str | None,
        typer.Option("--offsets", help="Only these offsets of the set-aside topic: A-B or P:A-B"),
    ] = None,
    since: SinceOpt = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", "-T", help="Replay as you: your token and principal replace the record's"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed; publish nothing")
    ] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Replay records that were replayed before")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replay late records (they are likely late again)")
    ] = False,
    broker: BrokerOpt = None,
) -> None:
    """Publish set-aside records again, byte for byte, to the topics they came from."""
    topology = load(module)
    if kind not in KINDS:
        raise UserError(f"--from {kind!r}: one of {', '.join(KINDS)}")
    partition, first, last = parse_offsets(offsets) if offsets else (None, 0, 0)
    physical_source = None
    if source is not None:
        physical_source = topology.physical(topic_name(topology, source))
    if token == "-":
        token = sys.stdin.read().strip()
    by = _os_user()
    if token is not None:
        try:
            by = decode_token(token).holder
        except TokenError as exc:
            raise UserError(f"--token: {exc}") from None
        if not (reason or source or offsets or since):
            raise UserError(
                "--token vouches for what is replayed, and anyone who can produce can write to "
                "a set-aside topic: choose the records with --offsets, --reason, --source or "
                "--since (--dry-run shows each)"
            )
    selection = ReplaySelection(
        reason=reason,
        source=physical_source,
        partition=partition,
        offsets=(first, last) if offsets else None,
        since_ms=parse_time(since) if since else None,
    )
    url = shared_broker_url(broker, "nothing would consume what this command replays")

    async def work(client: Client) -> Any:
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("replaying", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            report = await client.replay(
                kind, selection, token=token, by=by, dry_run=dry_run, again=again,
                force=force, progress=advance,
            )
            return report, [client.decode(item.record) for item in report.plan.chosen]

    report, decoded = with_client(url, topology, work)
    plan = report.plan
    verb = "would replay" if dry_run else "replayed"
    done = len(plan.chosen) if dry_run else len(report.published)
    out.print(f"{verb} {done} of {plan.matched} matching record(s) from {kind}", markup=False)
    for item, received in zip(plan.chosen, decoded, strict=True) if dry_run else ():
        out.print(f"- to {safe_text(item.topic, 200)}:", markup=False)
        out.print(as_line(describe_record(received, kind)), markup=False)
    for why, count in sorted(plan.skipped.items()):
        out.print(f"  skipped {count}: {why}: {SKIP_REASONS[why]}", markup=False)


def _iso(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # any timestamp can be produced
        return str(ms)


def _os_user() -> str:
    """Who runs this command, for the audit when no token names them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container), no $USER
        return "unknown-operator"


def register(app: typer.Typer) -> None:
    """Add the commands to the ``packetflow`` app."""
    app.command("tail")(tail)
    app.command("set-aside")(set_aside)
    app.command("replay")(replay)
