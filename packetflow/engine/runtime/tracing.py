"""The engine's hook for distributed tracing: off (None) by default, at no cost.

A worker given a :class:`Tracing` (``Worker(tracing=...)``; ``packetflow.observability``
has the OpenTelemetry one, on with ``--otel``) opens one span around each record it
handles, and adds a W3C ``traceparent`` header to each record it produces. PacketFlow's
context already carries W3C-shaped ids (a 128-bit trace id, a 64-bit span id per intent,
its parent's span id), so the spans use them: the span of an intent's handling has the
intent's span id and its parent is the span that sent it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from packetflow.core.context import Context
from packetflow.engine.transport import Record

TRACEPARENT = "traceparent"
# context baggage "trace_id-span_id": a root intent's trace is linked to that span (a
# schedule's firing, to the span that created the schedule)
LINK_BAGGAGE = "pf.link"


def traceparent(context: Context) -> bytes:
    """The W3C header of a record carrying ``context``: its parent is the span that sent
    it (the handling of the intent that emitted it; the intent's own span for a root)."""
    return f"00-{context.trace_id}-{context.parent_span_id or context.span_id}-01".encode()


class Tracing(Protocol):
    def handling(self, record: Record, context: Context) -> AbstractContextManager[object]:
        """A span around the handling of ``record`` (all its reactors and agents)."""
        ...

    def effect(self, name: str) -> AbstractContextManager[object]:
        """A span around one effect a reactor returned that does more than send (a call, a
        substrate's effect), inside the span of the record's handling."""
        ...

    def entry(
        self, name: str, attributes: dict[str, str]
    ) -> AbstractContextManager[tuple[str, str]]:
        """A span for a way in (an HTTP request, an MCP call): yields the trace id and span
        id the context of what it publishes descends from."""
        ...


def descend(context: Context, ids: tuple[str, str]) -> Context:
    """``context`` made a child of the span ``ids`` (trace id, span id) names."""
    trace_id, span_id = ids
    return context.model_copy(update={"trace_id": trace_id, "parent_span_id": span_id})
