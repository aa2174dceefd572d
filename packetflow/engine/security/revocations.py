"""Revocations: what ``caps revoke`` writes, how a worker reads it, and following it.

The compacted topic ``<topology>.revocations`` holds ``token:<id>`` (that token and every
token delegated from it) and ``holder:<name>`` (every token issued to that holder until
then); a tombstone lifts one. Every worker reads it to its end before processing anything
(:class:`RevocationFollower`), then follows it while it runs, applying each record to its
:class:`~packetflow.engine.security.guard.Guard`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from packetflow.engine.transport import Follower, Record, Transport
from packetflow.engine.transport.following import follow_forever, stop_following

log = logging.getLogger("packetflow.security")


@dataclass
class Revocation:
    kind: str  # "token" or "holder"
    subject: str
    at: float
    by: str | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


    @classmethod
    def from_record(cls, record: Record) -> Revocation | str | None:
        """The revocation a record holds; ``"token:<id>"``-style subject string for a
        tombstone (which lifts it); None for a record that is no revocation (logged)."""
        try:
            kind, subject = parse_revocation_key(record.key)
        except ValueError as exc:
            log.warning("ignoring revocation record at offset %s: %s", record.offset, exc)
            return None
        if record.value is None:
            return f"{kind}:{subject}"
        try:
            data = orjson.loads(record.value)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            at = data.get("at", record.timestamp / 1000)
            if not isinstance(at, (int, float)) or isinstance(at, bool):
                raise ValueError("'at' is not a number")
        except ValueError as exc:
            log.warning("revocation of %s %s: bad value (%s); revoking anyway", kind, subject, exc)
            data, at = {}, record.timestamp / 1000
        return cls(
            kind,
            subject,
            float(at),
            _str_or_none(data.get("by")),
            str(data.get("reason") or ""),
            {k: v for k, v in data.items() if k not in ("kind", "at", "by", "reason")},
        )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def revocation_key(*, token_id: str | None = None, holder: str | None = None) -> bytes:
    if (token_id is None) == (holder is None):
        raise ValueError("revoke either a token id or a holder")
    if token_id is not None:
        return f"token:{token_id}".encode()
    return f"holder:{holder}".encode()


def parse_revocation_key(key: bytes | None) -> tuple[str, str]:
    if not key:
        raise ValueError("revocation record has no key")
    kind, sep, subject = key.decode("utf-8", errors="replace").partition(":")
    if not sep or not subject or kind not in ("token", "holder"):
        raise ValueError(f"revocation key {key!r} is not 'token:<id>' or 'holder:<name>'")
    return kind, subject


def revocation_record(
    *,
    token_id: str | None = None,
    holder: str | None = None,
    by: str | None = None,
    reason: str = "",
    at: float | None = None,
) -> tuple[bytes, bytes]:
    """The key and value of a record on the revocations topic."""
    key = revocation_key(token_id=token_id, holder=holder)
    value = {
        "kind": "token" if token_id is not None else "holder",
        "token_id" if token_id is not None else "holder": token_id or holder,
        "by": by,
        "at": time.time() if at is None else at,
        "reason": reason,
    }
    return key, orjson.dumps(value)



class RevocationFollower:
    """Reads a topology's revocations topic to its end, then follows it.

    ``apply`` is called with each revocation record; ``refresh`` (rescanning trusted keys)
    every time the follower polls. On ``memory://`` new records are seen at once
    (:meth:`poll_now`, from the worker's loop); on ``kafka://`` a background task polls.
    """

    def __init__(
        self,
        transport: Transport,
        topic: str,
        apply: Callable[[list[Record]], None],
        refresh: Callable[[], object],
    ) -> None:
        self._transport = transport
        self._topic = topic
        self._apply = apply
        self._refresh = refresh
        self._follower: Follower | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        follower = self._transport.follow(
            self._topic, await self._transport.partitions_for(self._topic)
        )
        await follower.start()
        self._follower = follower
        self._apply(await follower.catch_up())
        if not follower.immediate:
            self._task = asyncio.create_task(
                follow_forever(follower, self._apply_and_refresh, "revocations", log)
            )

    def poll_now(self) -> None:
        """memory://: a revocation written before the records of a batch applies to them."""
        follower = self._follower
        if follower is not None and follower.immediate:
            self._apply(follower.poll_nowait())
            self._refresh()

    def _apply_and_refresh(self, records: list[Record]) -> None:
        self._apply(records)
        self._refresh()

    async def stop(self) -> None:
        task, follower, self._task, self._follower = self._task, self._follower, None, None
        await stop_following(task, follower)
