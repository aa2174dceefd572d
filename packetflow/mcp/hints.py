"""What an intent type tells an AI agent about itself as an MCP tool: read-only,
destructive, idempotent (MCP's ``ToolAnnotations``), declared on the intent class::

    @tool_hints(destructive=True)
    class CloseAccount(Intent, requires=["close:account/{account}"]): ...

The MCP client effect also reads ``idempotent`` here for intents a reactor calls on its
own topology's server. Hints are advice to the agent, never authority: every call is
checked against the caller's capabilities whatever they say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from packetflow.core.intent import Intent

T = TypeVar("T", bound=type[Intent])


@dataclass(frozen=True)
class ToolHints:
    """MCP tool annotations for one intent type (None: not said)."""

    title: str | None = None
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


_HINTS: dict[type[Intent], ToolHints] = {}


def tool_hints(
    *,
    title: str | None = None,
    read_only: bool | None = None,
    destructive: bool | None = None,
    idempotent: bool | None = None,
    open_world: bool | None = None,
) -> Callable[[T], T]:
    """Class decorator: how the intent type presents itself as an MCP tool."""

    def mark(cls: T) -> T:
        _HINTS[cls] = ToolHints(title, read_only, destructive, idempotent, open_world)
        return cls

    return mark


def hints_of(cls: type[Intent]) -> ToolHints:
    """The hints declared on ``cls`` (or a base class of it); none said: all None."""
    for base in cls.__mro__:
        if base in _HINTS:
            return _HINTS[base]
    return ToolHints()
