"""A call as it travels: the call record (:class:`McpCallRecord`, on the calls topic), who
called (:class:`Caller`, chosen by the engine), and carrying one call out against a
:class:`~packetflow.mcp.client.servers.Connection` (:func:`execute`): retries with backoff
for an idempotent tool only, within the call's timeout."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from mcp.shared.exceptions import MCPError

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.tokens import (
    BAD_REPLY_TO,
    BAD_SIGNATURE,
    DELEGATION_WIDENED,
    EXPIRED,
    INSUFFICIENT,
    MALFORMED,
    NOT_YET_VALID,
    OUTSIDE_WINDOW,
    PRINCIPAL_MISMATCH,
    REVOKED,
    UNKNOWN_KEY,
    UNSIGNED_INTERNAL,
)
from packetflow.engine.mcpcall import McpResult, Outcome
from packetflow.mcp.client.servers import Connection

log = logging.getLogger("packetflow.mcp.client")

# context baggage of a call record: who called (a Caller), sealed with the record
CALLER_BAGGAGE = "pf.mcp.caller"
BACKOFF = (0.2, 5.0)  # s: the first and the longest wait before an idempotent call is retried
# the guard's reasons (the denied topic's): a refused call record comes back as "denied"
DENIALS = frozenset({
    BAD_REPLY_TO, BAD_SIGNATURE, DELEGATION_WIDENED, EXPIRED, INSUFFICIENT, MALFORMED,
    NOT_YET_VALID, OUTSIDE_WINDOW, PRINCIPAL_MISMATCH, REVOKED, UNKNOWN_KEY, UNSIGNED_INTERNAL,
})  # fmt: skip


class McpCallRecord(
    Intent,
    type_name="packetflow.mcp.Call",
    key="call_id",
    internal=True,
    requires=["call:mcp/{server}/{tool}"],
):
    """A call on the calls topic: internal (a worker made it for an :class:`McpCall`, and
    sealed it), and requiring ``call:mcp/<server>/<tool>`` of the authority it carries, which
    the worker's guard checks where the client agent takes it."""

    call_id: str
    server: str
    tool: str
    arguments: dict[str, Any]
    timeout: float


@dataclass(frozen=True)
class Caller:
    """Where a call's result goes (the calling reactor's topic and the key of the record it
    handled) and what of the caller's context it gets back: chosen by the worker that made
    the call, carried in the call's context (sealed with it), never in user data."""

    topic: str  # logical
    key: str | None
    server: str
    tool: str
    # of the calling record's context: the result is that intent's again (a reply to it
    # answers its request), in a span of its own
    intent_id: str
    causation_id: str | None
    reply_to: str | None
    requester: str | None

    @classmethod
    def at(cls, topic: str, key: str | None, server: str, tool: str, context: Context) -> Caller:
        return cls(topic, key, server, tool, context.intent_id, context.causation_id,
                   context.reply_to, context.requester)  # fmt: skip

    def encode(self) -> str:
        return orjson.dumps(self.__dict__).decode()

    @classmethod
    def of(cls, context: Context) -> Caller | None:
        raw = context.baggage.get(CALLER_BAGGAGE)
        if raw is None:
            return None
        try:
            return cls(**orjson.loads(raw))
        except (ValueError, TypeError):
            return None

    def context(self, call: Context, hop: str) -> Context:
        """The context of the result: the call's (the caller's authority, trace and
        correlation) as the calling intent's again, answering whoever it would answer."""
        baggage = {k: v for k, v in call.baggage.items() if k != CALLER_BAGGAGE}
        return call.inherit(hop).model_copy(update={
            "intent_id": self.intent_id, "causation_id": self.causation_id,
            "reply_to": self.reply_to, "requester": self.requester, "baggage": baggage,
        })  # fmt: skip


def result(
    call: McpCallRecord, outcome: Outcome, error: str | None = None, **more: Any
) -> McpResult:
    """The result of ``call``."""
    return McpResult(
        call_id=call.call_id, server=call.server, tool=call.tool, outcome=outcome, error=error,
        **more,
    )  # fmt: skip


async def execute(
    connection: Connection, call: McpCallRecord, idempotent: bool, within: float | None = None
) -> McpResult:
    """Call the tool once, or (``idempotent``) until it answers without error, at most the
    server's ``attempts`` times with backoff, all within the call's timeout (``within``: what
    is left of it). A session that cannot be opened is tried again whatever the tool
    (nothing was sent); a call whose transport broke comes back ``unknown-outcome`` unless
    the tool is idempotent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (call.timeout if within is None else within)
    most = connection.server.decl.attempts
    attempts, opened, delay = 0, 0, BACKOFF[0]
    last: McpResult | None = None
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return last or result(call, "timeout", f"no answer within {call.timeout:g}s",
                                  attempts=attempts)  # fmt: skip
        try:
            client = await asyncio.wait_for(connection.client(), remaining)
        except TimeoutError:
            return result(call, "unavailable", f"server {call.server} not reached within "
                          f"{call.timeout:g}s", attempts=attempts)  # fmt: skip
        except Exception as exc:
            opened += 1
            last = result(call, "unavailable", f"server {call.server}: {_one_line(exc)}",
                          attempts=attempts)  # fmt: skip
            if opened >= most:
                return last
        else:
            attempts += 1
            last = await _attempt(connection, client, call, remaining, idempotent, attempts)
            if last.outcome in ("ok", "timeout", "unknown-outcome") or not idempotent:
                return last
            if attempts >= most:
                return last
            log.info("MCP %s/%s: attempt %d failed (%s), retrying", call.server, call.tool,
                     attempts, last.error)  # fmt: skip
        pause = min(delay, deadline - loop.time())
        if pause <= 0:
            return last
        await asyncio.sleep(pause)
        delay = min(delay * 2, BACKOFF[1])


async def _attempt(
    connection: Connection,
    client: Any,
    call: McpCallRecord,
    remaining: float,
    idempotent: bool,
    attempts: int,
) -> McpResult:
    try:
        answer = await asyncio.wait_for(client.call_tool(call.tool, call.arguments), remaining)
    except TimeoutError:
        return result(call, "timeout", f"no answer within {call.timeout:g}s", attempts=attempts)
    except MCPError as exc:  # the server answered with an error (unknown tool, bad params)
        return result(call, "error", _one_line(exc), attempts=attempts)
    except Exception as exc:  # the transport broke mid-call: did the tool run?
        await connection.broken(client)
        why = f"the connection to {call.server} broke during the call: {_one_line(exc)}"
        if idempotent:
            return result(call, "error", why, attempts=attempts)
        return result(call, "unknown-outcome", why, attempts=attempts)
    content = [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in answer.content]
    if answer.is_error:
        text = "\n".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
        return result(call, "error", text or "the tool reported an error", content=content,
                      structured=answer.structured_content, attempts=attempts)  # fmt: skip
    return result(call, "ok", content=content, structured=answer.structured_content,
                  attempts=attempts)  # fmt: skip


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
