"""What the engine set aside, read back: why (reason, error, reactor, missing capabilities),
from where (``pf-source``), whether the copy is whole, and the record as it was sent (what a
replay publishes again). :func:`summarise` counts them by reason, reactor and source.

The engine appends its ``pf-*`` headers after the sender's when it sets a record aside
(``Processor.divert``), so the sender's headers are the record's headers up to the first of
those trailing ones.
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
        added = dict((name, raw) for name, raw in _trailing(record.headers))
        if REASON_HEADER not in added:
            return None
        text = {name: raw.decode(errors="replace") for name, raw in added.items()}
        missing = text.get(MISSING_HEADER)
        size = text.get(ORIGINAL_SIZE_HEADER)
        known = {REASON_HEADER, ERROR_HEADER, SOURCE_HEADER, REACTOR_HEADER, MISSING_HEADER,
                 TRUNCATED_HEADER, ORIGINAL_SIZE_HEADER}
        return cls(
            reason=text[REASON_HEADER],
            error=text.get(ERROR_HEADER),
            source=text.get(SOURCE_HEADER),
            reactor=text.get(REACTOR_HEADER),
            missing=tuple(m.strip() for m in missing.split(",")) if missing else (),
            truncated=text.get(TRUNCATED_HEADER) == "true",
            original_size=int(size) if size and size.isdigit() else None,
            details={k: v for k, v in text.items() if k not in known},
        )

    @property
    def source_topic(self) -> str | None:
        """The (physical) topic the record was read from."""
        parts = self.source.rsplit("/", 2) if self.source else []
        return parts[0] if len(parts) == 3 else None

    @property
    def source_partition(self) -> int | None:
        parts = self.source.rsplit("/", 2) if self.source else []
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def original_headers(headers: Headers) -> list[tuple[str, bytes]]:
    """``headers`` without those the engine added when it set the record aside."""
    kept = list(headers)
    while kept and kept[-1][0] in SET_ASIDE_HEADERS:
        kept.pop()
    return kept


def _trailing(headers: Headers) -> list[tuple[str, bytes]]:
    """The engine's headers at the end of a set-aside record (a sender's own ``pf-reason``
    earlier in the list is not the engine's)."""
    out: list[tuple[str, bytes]] = []
    for name, raw in reversed(headers):
        if name not in SET_ASIDE_HEADERS:
            break
        out.append((name, raw or b""))
    return out


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
