"""The audit topic ``<topology>.audit``: one JSON record per issue, delegation, revocation
and denial (and per allowed intent, when asked), with who and when.

:class:`Auditor` is the one writer: the worker's denials and allowed intents, the client's
issues and revocations all go through it, with one record shape and one key rule (the
token's holder, else the principal, else ``anonymous``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from packetflow.core.tokens import decode_token

# what sends an audit record: (value, key) -> anything awaitable
Send = Callable[[bytes, bytes], Awaitable[Any]]


class Auditor:
    """Writes audit records for one topology."""

    def __init__(self, topology: str, send: Send) -> None:
        self.topology = topology
        self._send = send

    async def record(
        self, event: str, at: float, *, key: str | None = None, **fields: Any
    ) -> None:
        """One event; ``key`` defaults to the holder, else the principal, else anonymous."""
        who = key or fields.get("holder") or fields.get("principal") or "anonymous"
        await self._send(audit_record(event, at, topology=self.topology, **fields), who.encode())

    async def issued(self, token: str, *, by: str | None, at: float) -> None:
        """An ``issued`` (or ``delegated``) event for ``token``."""
        fields = token_audit_fields(token)
        event = "delegated" if "parent_token_id" in fields else "issued"
        await self.record(event, at, key=fields["holder"], by=by, **fields)


def audit_record(event: str, at: float, **fields: Any) -> bytes:
    """One audit topic record: ``{"event": ..., "at": epoch, "time": ISO, ...}``."""
    body = {"event": event, "at": at, "time": iso(at)}
    body.update({k: v for k, v in fields.items() if v is not None})
    return orjson.dumps(body)


def token_audit_fields(token: str) -> dict[str, Any]:
    """What the audit topic says about an issued or delegated token."""
    claims = decode_token(token)
    fields: dict[str, Any] = {
        "token_id": claims.token_id,
        "holder": claims.holder,
        "issuer": claims.issuer,
        "key_id": claims.key_id,
        "grants": [str(g) for g in claims.grants],
        "not_before": claims.not_before,
        "expires": claims.expires,
    }
    if claims.parent is not None:
        fields["parent_token_id"] = decode_token(claims.parent).token_id
    return fields


def iso(epoch: float) -> str:
    """An epoch as ISO 8601 UTC with a ``Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
