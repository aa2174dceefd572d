"""Which set-aside records to publish again, and as what (``Client.replay`` does the I/O).

A replayed record is the original, value and key byte for byte, with the sender's headers
(the engine's set-aside headers taken off) and ``pf-replay-of`` naming the set-aside copy;
it goes back to the topic in its ``pf-source``, where the engine checks it again like any
record. The set-aside topics take records from anyone who can produce, so ``pf-source`` is
not trusted: only topics the topology consumes are replayed to, never an internal one.
With an operator's token, the token and the context's principal are replaced by theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from packetflow.core.context import Context
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTEXT_HEADER,
    MAC_HEADER,
    REPLAY_OF_HEADER,
    TOKEN_HEADER,
    encode_context,
)
from packetflow.engine.setaside import SetAside, original_headers
from packetflow.engine.transport import Record

# What a replay can start from: the set-aside topics' short names, in the order of
# ``TopicNames.set_aside``.
KINDS = ("dead-letters", "denied", "late", "drops")

# Why a selected record is not replayed (``ReplayPlan.skipped``).
SKIP_REASONS = {
    "duplicate": "set aside more than once (at-least-once): replayed once",
    "already-replayed": "replayed before; --again (again=True) replays it again",
    "truncated": "the set-aside copy keeps only the start of the value",
    "late": "it would be late again in its window; --force (force=True) replays it anyway",
    "not-a-source": "its pf-source is not a topic this topology consumes (the topics the "
    "engine manages are never written to)",
    "deadline": "its deadline has passed, so it would be set aside again; --force "
    "(force=True) replays it anyway",
}


@dataclass(frozen=True)
class ReplaySelection:
    """Which set-aside records to replay; every given criterion must hold."""

    reason: str | None = None
    source: str | None = None  # the topic they were read from (physical)
    partition: int | None = None  # of the set-aside topic, with ``offsets``
    offsets: tuple[int, int] | None = None  # first and last offset, inclusive
    since_ms: int | None = None  # set aside at or after

    def matches(self, record: Record, facts: SetAside) -> bool:
        if self.reason is not None and facts.reason != self.reason:
            return False
        if self.source is not None and facts.source_topic != self.source:
            return False
        if self.partition is not None and record.partition != self.partition:
            return False
        if self.offsets is not None and not self.offsets[0] <= record.offset <= self.offsets[1]:
            return False
        return self.since_ms is None or record.timestamp >= self.since_ms


@dataclass(frozen=True)
class Replayable:
    """One record to publish again."""

    copy: str  # the set-aside copy: "topic/partition/offset"
    source: str  # where it was read from the first time (its pf-source)
    reason: str  # why it was set aside
    topic: str  # where it goes (physical)
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    record: Record  # the set-aside copy itself (to show what is vouched for)


@dataclass
class ReplayPlan:
    """What a replay would publish, and what it leaves and why."""

    chosen: list[Replayable] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    matched: int = 0  # set-aside records the selection matched


def plan_replay(
    records: Iterable[Record],
    *,
    kind: str,
    selection: ReplaySelection,
    sources: set[str],
    replayed: set[str],
    token: str | None = None,
    principal: str | None = None,
    again: bool = False,
    force: bool = False,
) -> ReplayPlan:
    """The records of set-aside topic ``kind`` to replay, oldest first per partition.

    ``sources``: the physical topics the topology consumes (the only ones written to);
    ``replayed``: the pf-sources replayed before (from the audit topic); ``token`` and
    ``principal``: the operator's, replacing the record's own.
    """
    plan = ReplayPlan()
    seen: set[str] = set()
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        facts = SetAside.of(record)
        if facts is None or not selection.matches(record, facts):
            continue
        plan.matched += 1
        source, topic = facts.source or "", facts.source_topic
        why = None
        if source in seen:
            why = "duplicate"
        elif source in replayed and not again:
            why = "already-replayed"
        elif facts.truncated:
            why = "truncated"
        elif kind == "late" and not force:
            why = "late"
        elif facts.reason == "deadline" and not force:
            why = "deadline"
        elif topic is None or topic not in sources:
            why = "not-a-source"
        if why is not None:
            plan.skipped[why] += 1
            continue
        seen.add(source)
        assert topic is not None
        # an earlier replay's mark goes: this one names the copy it is made from
        headers = [h for h in original_headers(record.headers) if h[0] != REPLAY_OF_HEADER]
        if token is not None:
            headers = _as_operator(headers, token, principal)
        copy = f"{record.topic}/{record.partition}/{record.offset}"
        headers.append((REPLAY_OF_HEADER, copy.encode()))
        plan.chosen.append(
            Replayable(
                copy, source, facts.reason, topic, record.key, record.value, headers, record
            )
        )
    return plan


def _as_operator(
    headers: list[tuple[str, bytes]], token: str, principal: str | None
) -> list[tuple[str, bytes]]:
    """``headers`` with the operator's token, and their principal in the context (a seal
    covers the old context, so it goes too: an internal intent is not the operator's)."""
    out: list[tuple[str, bytes]] = []
    has_context = False
    for name, raw in headers:
        if name in (TOKEN_HEADER, CAPABILITIES_HEADER, MAC_HEADER):
            continue
        if name == CONTEXT_HEADER:
            has_context = True
            raw = _with_principal(raw, principal)
        out.append((name, raw))
    if not has_context:
        out.append((CONTEXT_HEADER, encode_context(Context.new(principal))))
    out.append((TOKEN_HEADER, token.encode()))
    return out


def _with_principal(raw: bytes, principal: str | None) -> bytes:
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # malformed: checked again, and set aside again, by the worker
    if not isinstance(fields, dict):
        return raw
    fields["principal"] = principal
    return orjson.dumps(fields)
