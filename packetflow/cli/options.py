"""Command-line options shared by the ``packetflow`` commands (one spelling, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker", "-b", help="kafka://host:port or memory:// (default $PACKETFLOW_BROKER)"
    ),
]
TopologyOpt = Annotated[
    str | None,
    typer.Option(
        "--topology",
        "-t",
        envvar="PACKETFLOW_TOPOLOGY",
        help="Module holding the topology, e.g. topologies.orders ($PACKETFLOW_TOPOLOGY)",
    ),
]
KeysOpt = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        help="Keys directory (default $PACKETFLOW_KEYS, else $PACKETFLOW_HOME/keys)",
        file_okay=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token", "-T", help="Signed capability token (packetflow caps issue); '-' reads stdin"
    ),
]
EnvTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        "-T",
        envvar="PACKETFLOW_TOKEN",
        show_envvar=True,
        help="Signed capability token (packetflow caps issue); '-' reads stdin",
    ),
]
CapabilityOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--capability",
        "-c",
        help="Unsigned capability op:resource (repeatable; allow_unsigned topologies only)",
    ),
]
PrincipalOpt = Annotated[str | None, typer.Option("--principal", "-p", help="Who is asking")]
KeyOpt = Annotated[
    str | None, typer.Option("--key", help="Record key (default: the intent's key field)")
]
TopicOpt = Annotated[
    str | None, typer.Option("--topic", help="Topic (default: the intent type's topic)")
]
