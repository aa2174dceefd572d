"""Calling an MCP tool from a reactor: the :class:`McpCall` effect and the :class:`McpResult`
intent that answers it.

Declarations only, in the engine so that any substrate (orchestration's sagas, say) can
return and consume them; ``packetflow.mcp.client`` registers the handler and the agent
that carry a call out (``mcp_servers(topology, ...)``). A reactor returns
``mcp_call("weather", "forecast", {"city": "Oslo"}, timeout=10)``; later its topic gets an
:class:`McpResult`, keyed as the record that called and in that record's context (so the
reactor taking it can ``reply`` to whoever asked it). Calling needs the capability
``call:mcp/<server>/<tool>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from packetflow.core.effects import Effect
from packetflow.core.intent import Intent

# what a call came to: the tool answered (ok), answered with an error (error), did not
# answer in time (timeout), may or may not have run (unknown-outcome: a worker died or the
# connection broke mid-call, and the tool is not idempotent, so it is never called again),
# the caller may not call it (denied), or the server could not be reached (unavailable)
Outcome = Literal["ok", "error", "timeout", "unknown-outcome", "denied", "unavailable"]
OUTCOMES: tuple[Outcome, ...] = (
    "ok", "error", "timeout", "unknown-outcome", "denied", "unavailable",
)  # fmt: skip
DEFAULT_TIMEOUT = 30.0  # s
_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


@dataclass(frozen=True, slots=True)
class McpCall(Effect):
    """Call ``tool`` of the declared MCP server ``server`` with ``arguments``; the answer
    comes back later as an :class:`McpResult` (see :func:`mcp_call`)."""

    server: str
    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT  # s, for the whole call, retries included


def mcp_call(
    server: str,
    tool: str,
    arguments: Mapping[str, Any] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> McpCall:
    """The effect calling ``tool`` on ``server`` (a name given to ``mcp_servers``) with
    ``arguments`` (JSON values); its :class:`McpResult` comes to the calling reactor's topic,
    keyed as the record it handled, within ``timeout`` seconds (or says ``timeout``)."""
    for what, name in (("server", server), ("tool", tool)):
        if not _NAME.match(name):
            raise ValueError(f"MCP {what} name {name!r}: letters, digits, '.', '_', '-' only")
    if timeout <= 0:
        raise ValueError(f"an MCP call's timeout must be positive, not {timeout}")
    args = dict(arguments or {})
    try:
        orjson.dumps(args)
    except TypeError as exc:
        raise ValueError(f"MCP call {server}/{tool}: arguments are not JSON: {exc}") from None
    return McpCall(server, tool, args, float(timeout))


class McpResult(Intent, type_name="packetflow.McpResult", internal=True):
    """What an :class:`McpCall` came to, sent by the engine to the calling reactor's topic
    (keyed as the record that called, in its context). ``content`` holds the tool's MCP
    content blocks as JSON, ``structured`` its structured content; ``error`` says why for
    every outcome but ``ok``; ``attempts`` counts the calls made (retries of an idempotent
    tool included)."""

    call_id: str
    server: str
    tool: str
    outcome: Outcome
    content: list[dict[str, Any]] = []
    structured: Any = None
    error: str | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def text(self) -> str:
        """The text blocks of ``content``, joined by newlines."""
        return "\n".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")
