"""What the engine set aside, read back: why (reason, error, reactor, missing capabilities),
from where (``pf-source``), whether the copy is whole, and the record as it was sent (what a
replay publishes again). :func:`summarise` counts them by reason, reactor and source.

The engine appends its ``pf-*`` headers after the sender's when it sets a record aside
(``Processor.divert``), starting with ``pf-reason``: the sender's headers are the record's
headers up to the last ``pf-reason``, whatever ``pf-*`` headers the sender sent itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from packetflow.engine.codec import (
    ERROR_HEADER,
    MISSING_HEADER,
    ORIGINAL_SIZE_HEADER,
    REACTOR_HEADER,
    REASON_HEADER,
    SET_ASIDE_HEADERS,
    SOURCE_HEADER,
    TRUNCATED_HEADER,
)
from packetflow.engine.transport import Headers, Record


@dataclass(frozen=True, slots=True)
class SetAside:
    """Why and from where one set-aside record came (its engine-added ``pf-*`` headers)."""

    reason: str
    error: str | None
    source: str | None  # "topic/partition/offset" it was read from (physical topic)
    reactor: str | None
    missing: tuple[str, ...]  # capabilities a denial found missing
    truncated: bool  # the copy keeps only the start of the value
    original_size: int | None
    details: dict[str, str] = field(default_factory=dict)  # event time, watermark, strategy

    @classmethod
    def of(cls, record: Record) -> SetAside | None:
        """The set-aside facts of ``record``; None when it carries no ``pf-reason``."""
        start = _engine_block(record.headers)
        if start is None:
            return None
        text = {
            name: (raw or b"").decode(errors="replace")
            for name, raw in list(record.headers)[start:]
        }
        missing = text.get(MISSING_HEADER)
        known = {REASON_HEADER, ERROR_HEADER, SOURCE_HEADER, REACTOR_HEADER, MISSING_HEADER,
                 TRUNCATED_HEADER, ORIGINAL_SIZE_HEADER}
        return cls(
            reason=text[REASON_HEADER],
            error=text.get(ERROR_HEADER),
            source=text.get(SOURCE_HEADER),
            reactor=text.get(REACTOR_HEADER),
            missing=tuple(m.strip() for m in missing.split(",")) if missing else (),
            truncated=text.get(TRUNCATED_HEADER) == "true",
            original_size=_number(text.get(ORIGINAL_SIZE_HEADER)),
            details={k: v for k, v in text.items() if k not in known},
        )

    @property
    def source_topic(self) -> str | None:
        """The (physical) topic the record was read from."""
        parts = self.source.rsplit("/", 2) if self.source else []
        return parts[0] if len(parts) == 3 and parts[0] else None


def original_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """``headers`` as the sender sent them: without the block the engine added when it set
    the record aside."""
    start = _engine_block(headers)
    kept = list(headers)
    return kept if start is None else kept[:start]


def _engine_block(headers: Headers) -> int | None:
    """Where the engine's headers start: it appends them after the sender's, beginning with
    ``pf-reason`` (``Processor.divert``), so its block is the last ``pf-reason`` and what
    follows, all of them set-aside headers. A sender's own ``pf-*`` headers come before."""
    names = [name for name, _ in headers]
    for i in range(len(names) - 1, -1, -1):
        if names[i] == REASON_HEADER:
            rest = names[i:]
            return i if all(n in SET_ASIDE_HEADERS for n in rest) else None
    return None


def _number(text: str | None) -> int | None:
    """A non-negative decimal number, or None (whatever a forged header holds)."""
    if not text or len(text) > 20 or not text.isascii() or not text.isdecimal():
        return None
    return int(text)


@dataclass
class SummaryRow:
    """Set-aside records of one kind: where, why, whose, from which topic, how many, when."""

    topic: str  # the set-aside topic (logical)
    reason: str
    reactor: str | None
    source_topic: str | None
    count: int
    first_ms: int
    last_ms: int


def summarise(records: Iterable[tuple[str, Record]]) -> list[SummaryRow]:
    """Count ``(set-aside topic, record)`` pairs by topic, reason, reactor and source topic;
    most frequent first. Records without a ``pf-reason`` count under reason ``unknown``."""
    rows: dict[tuple[str, str, str | None, str | None], SummaryRow] = {}
    for topic, record in records:
        facts = SetAside.of(record)
        reason = facts.reason if facts else "unknown"
        reactor = facts.reactor if facts else None
        source = facts.source_topic if facts else None
        row = rows.get((topic, reason, reactor, source))
        if row is None:
            row = rows[(topic, reason, reactor, source)] = SummaryRow(
                topic, reason, reactor, source, 0, record.timestamp, record.timestamp
            )
        row.count += 1
        row.first_ms = min(row.first_ms, record.timestamp)
        row.last_ms = max(row.last_ms, record.timestamp)
    return sorted(rows.values(), key=lambda r: (-r.count, r.topic, r.reason))
