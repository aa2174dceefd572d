"""Mistakes on the command line, said in one line: :class:`UserError` (exit 2, no
traceback; ``packetflow --debug`` shows the cause), and resolving the options every command
shares (the topology module, the broker URL) into one or the other."""

from __future__ import annotations

from types import ModuleType

from packetflow.cli.loader import LoadError, load_topology
from packetflow.engine.topology import Topology, default_broker_url
from packetflow.engine.transport import BrokerError, BrokerURL, BrokerURLError


class UserError(Exception):
    """A mistake on the command line: reported in one line, exit code 2, no traceback
    (``packetflow --debug ...`` shows the traceback of what caused it)."""


def load_with_module(spec: str) -> tuple[Topology, ModuleType]:
    """The topology of module ``spec`` and the module, or a :class:`UserError` saying what
    is wrong."""
    try:
        return load_topology(spec)
    except LoadError as exc:
        raise UserError(str(exc)) from exc.__cause__


def load(spec: str) -> Topology:
    """The topology of module ``spec``, or a :class:`UserError` saying what is wrong."""
    return load_with_module(spec)[0]


def broker_url(value: str | None) -> str:
    """``value`` (or ``$PACKETFLOW_BROKER``) as a checked broker URL."""
    url = value or default_broker_url()
    try:
        BrokerURL.parse(url)
    except BrokerURLError as exc:
        raise UserError(str(exc)) from None
    return url


def shared_broker_url(value: str | None, doing: str) -> str:
    """A broker other processes share: ``memory://`` lives inside one process, so a
    command that reads or writes what workers do needs Kafka."""
    url = broker_url(value)
    if url.startswith("memory://"):
        raise UserError(
            f"memory:// lives inside one process, so {doing}: pass --broker "
            "kafka://host:port or set PACKETFLOW_BROKER"
        )
    return url


def safe_url(url: str) -> str:
    """``url`` as it may be shown (no password)."""
    return BrokerURL.parse(url).safe


def describe(exc: BaseException) -> str:
    """An exception in one line, its type named once."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, BrokerError) or type(exc).__name__ in message:
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
