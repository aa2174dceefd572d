"""``packetflow mcp serve MODULE``: a topology's intents as MCP tools for AI agents, over
stdio (Claude Desktop, Cursor and other hosts start it as a subprocess) or Streamable HTTP
(see packetflow.mcp). A worker started with ``--http`` also serves them at ``/mcp``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from packetflow.cli.errors import UserError, describe, load, shared_broker_url
from packetflow.cli.operate import ModuleArg
from packetflow.cli.options import BrokerOpt, EnvTokenOpt
from packetflow.observability.logs import configure_logging

app = typer.Typer(help="Serve a topology to AI agents over MCP.", no_args_is_help=True)
err = Console(stderr=True, highlight=False)


@app.command()
def serve(
    module: ModuleArg,
    broker: BrokerOpt = None,
    stdio: Annotated[
        bool, typer.Option("--stdio", help="Serve over stdin/stdout (the default)")
    ] = False,
    http: Annotated[
        str | None,
        typer.Option(help="Serve Streamable HTTP at http://HOST:PORT/mcp instead of stdio"),
    ] = None,
    token: EnvTokenOpt = None,
    log_level: Annotated[str, typer.Option(help="Log level (logs go to stderr)")] = "WARNING",
) -> None:
    """Serve MODULE's intents as MCP tools, its state and set-aside records as resources.
    Over stdio every call is checked with --token; over HTTP each caller sends its own."""
    if token == "-":
        raise UserError("--token -: stdin carries MCP here; pass the token in $PACKETFLOW_TOKEN")
    if stdio and http:
        raise UserError("give --stdio or --http, not both")
    try:
        configure_logging(log_level, "text")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    topology = load(module)
    url = shared_broker_url(broker, "no worker would see what its tools send")
    if http is None and token is None:
        err.print("note: no --token (or $PACKETFLOW_TOKEN): only intents that require "
                  "nothing can be sent", soft_wrap=True)  # fmt: skip
    from packetflow.mcp import serve as serve_mcp  # the SDK loads only for this command

    def ready(where: str) -> None:
        err.print(f"serving MCP for {topology.name} on {where}", soft_wrap=True)

    try:
        asyncio.run(serve_mcp(topology, url, token=token, http=http, ready=ready))
    except KeyboardInterrupt:
        pass
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot serve MCP on {url}: {describe(exc)}") from None
