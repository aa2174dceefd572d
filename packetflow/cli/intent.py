"""``packetflow intent TEXT``: say what you want done in plain words; a provider proposes
the intent (``--provider``: offline by default, or a model through pydantic-ai), the
command shows it and, once confirmed, publishes it with your token.

Nothing is filled in that the text does not say: a proposal with a required field left
open is refused ("could not fill amount"), and so is one the token does not cover, checked
here as a worker would before anything is published.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.table import Table
from rich.text import Text

from packetflow.cli.errors import UserError, broker_url, describe, load, safe_url
from packetflow.cli.options import BrokerOpt, EnvTokenOpt, PrincipalOpt, TopologyOpt
from packetflow.engine.client import Client
from packetflow.engine.ingress import IngressError, Submission, hopeless, submission
from packetflow.engine.topology import Topology, TopologyError

if TYPE_CHECKING:
    from packetflow.mcp.proposals import Proposal

T = TypeVar("T")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ProviderOpt = Annotated[
    str | None,
    typer.Option(
        "--provider",
        envvar="PACKETFLOW_NL_PROVIDER",
        show_envvar=True,
        help="offline (the default: no model) or pydantic-ai:MODEL, e.g. "
        "pydantic-ai:openai:gpt-4o ($OPENAI_API_KEY, $OPENAI_BASE_URL)",
    ),
]


def intent(
    text: Annotated[str, typer.Argument(help="What you want done, e.g. 'deposit 30 into acct-7'")],
    topology_spec: TopologyOpt = None,
    provider: ProviderOpt = None,
    token: EnvTokenOpt = None,
    principal: PrincipalOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Publish without asking")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show the proposed intent")
    ] = False,
    broker: BrokerOpt = None,
) -> None:
    """Propose an intent from plain words, show it, and publish it once confirmed."""
    if topology_spec is None:
        raise UserError("name the topology with --topology MODULE (or set PACKETFLOW_TOPOLOGY)")
    topology = load(topology_spec)
    url = broker_url(broker)
    if token == "-":
        token = sys.stdin.read().strip()
    # the proposals package (and a model provider's pydantic-ai) load only for this command
    from packetflow.mcp.proposals import ProposalError, proposable_types, provider_from

    try:
        chosen = provider_from(provider)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    types = proposable_types(topology)
    if not types:
        raise UserError(f"topology {topology.name} takes no intents from outside")
    try:
        proposal = asyncio.run(chosen.propose(text, types))
    except ProposalError as exc:
        raise UserError(str(exc)) from exc.__cause__
    if proposal.intent_type is None:
        raise UserError("; ".join(proposal.notes) or "no intent type matches the text")
    show(proposal)
    if proposal.missing:
        raise UserError(
            f"could not fill {', '.join(proposal.missing)} for {proposal.intent_type}: "
            "say it in the text (e.g. "
            f"{proposal.missing[0]}=...)"
        )
    try:
        built = proposal.build(topology)
    except ProposalError as exc:
        raise UserError(str(exc)) from None
    if dry_run:
        out.print("dry run: not published")
        return
    item = _submission(topology, built.intent_type, built.model_dump(mode="json"), token, principal)
    why = hopeless(topology, item, time.time())
    if why is not None:
        hint = ": pass --token (or set $PACKETFLOW_TOKEN)" if why.code == "no-token" else ""
        raise UserError(f"{why.message}{hint}")
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    # checked as a worker would before anyone is asked to confirm: a model gains nothing
    denial = asyncio.run(_broker(url, lambda: _check(topology, url, item)))
    if denial is not None:
        raise UserError(f"refused ({denial[0]}): {denial[1]}")
    if not yes and not typer.confirm(f"Publish this {built.intent_type}?", default=False):
        err.print("not published")
        raise typer.Exit(1)
    asyncio.run(_broker(url, lambda: _publish(topology, url, item)))


def _submission(
    topology: Topology,
    intent_type: str,
    data: dict[str, Any],
    token: str | None,
    principal: str | None,
) -> Submission:
    try:
        return submission(
            topology, {"type": intent_type, "data": data, "token": token, "principal": principal}
        )
    except IngressError as exc:
        raise UserError(str(exc)) from None


def show(proposal: Proposal) -> None:
    """The proposal as a small table: its type, each value found, what is missing, notes."""
    title = Text(f"proposed by {proposal.provider}: ")
    title.append(proposal.intent_type or "no intent", style="bold")
    out.print(title)
    table = Table(box=None, show_header=False, padding=(0, 2))
    table.add_column("field", style="cyan")
    table.add_column("value")
    for name, value in proposal.fields.items():
        table.add_row(Text(name), Text(_shown(value)))
    for name in proposal.missing:
        table.add_row(Text(name), Text("(could not fill)", style="bold red"))
    if table.row_count:
        out.print(table)
    for note in proposal.notes:
        out.print(Text(f"note: {note}", style="dim"))


def _shown(value: Any) -> str:
    plain = to_jsonable_python(value)
    return plain if isinstance(plain, str) else repr(plain)


async def _broker(url: str, work: Callable[[], Awaitable[T]]) -> T:
    """``work``, with broker trouble as one line."""
    try:
        return await work()
    except (UserError, TopologyError) as exc:
        raise UserError(str(exc)) from None
    except Exception as exc:
        raise UserError(f"cannot publish to {safe_url(url)}: {describe(exc)}") from exc


async def _publish(topology: Topology, url: str, item: Submission) -> None:
    """Publish ``item`` (the workers check it again, as any record)."""
    intent = item.intent
    async with Client(url, topology) as client:
        delivery = await client.send(intent, context=item.context, key=item.key, topic=item.topic)
    out.print(
        f"published {intent.intent_type} (intent {item.context.intent_id}) to "
        f"{delivery.topic}[{delivery.partition}] at offset {delivery.offset}"
    )
    if url.startswith("memory://"):
        err.print("note: memory:// lives inside this process: no worker will see it")


async def _check(topology: Topology, url: str, item: Submission) -> tuple[str, str] | None:
    """Why the topology's workers would deny ``item`` (reason, message), or None."""
    from packetflow.engine.runtime.gate import Gate

    async with Client(url, topology) as client, Gate(client.transport, topology) as gate:
        denial = gate.authorize(item.intent.requirements(), item.context, item.intent.intent_type)
    return None if denial is None else (denial.reason, denial.message)
