"""A record as an operator may see it: its intent and context decoded, its token shown by id,
holder and grants (never its value), why it was set aside, and bytes that could not be
decoded escaped and cut short. ``packetflow tail`` and ``packetflow set-aside`` print this;
the dashboard and MCP tools can serve the same dictionary.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from packetflow.core.tokens import TokenError, decode_token
from packetflow.engine.client import Received
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTENT_TYPE_HEADER,
    CONTEXT_HEADER,
    MAC_HEADER,
    SET_ASIDE_HEADERS,
    TOKEN_HEADER,
    TYPE_HEADER,
    VERSION_HEADER,
    header,
)
from packetflow.engine.setaside import SetAside

PREVIEW = 200  # characters of an undecodable value or an unknown header shown
FIELD = 1000  # characters of any other string shown (a field, an error, an id)
_SHOWN_ELSEWHERE = {
    TYPE_HEADER, VERSION_HEADER, CONTEXT_HEADER, TOKEN_HEADER, CAPABILITIES_HEADER,
    MAC_HEADER, CONTENT_TYPE_HEADER, *SET_ASIDE_HEADERS,
}
# headers whose names say they hold a secret are shown as "(hidden)"
_SECRET_WORDS = (
    "token", "auth", "secret", "password", "passwd", "cookie", "key", "bearer", "jwt",
    "credential", "session",
)
# what looks like a signed token (payload.signature, base64url) or a bearer credential,
# wherever it stands (an intent's field, a header, undecoded bytes)
_TOKENISH = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{43,}")
_BEARER = re.compile(r"(?i)\bbearer\s+\S+")


def safe_text(text: str, limit: int | None = None) -> str:
    """``text`` with every unprintable character escaped (no terminal control sequences,
    C1 controls or direction overrides), anything that looks like a token hidden, cut to
    ``limit`` characters with a note of how many there were."""
    over = limit is not None and len(text) > limit
    cut = _BEARER.sub("Bearer (hidden)", _TOKENISH.sub("(token hidden)", text[:limit]))
    escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return f"{escaped}… ({len(text)} characters)" if over else escaped


def _safe(value: Any, limit: int = FIELD) -> Any:
    """Every string in ``value`` (keys too) through :func:`safe_text`."""
    if isinstance(value, str):
        return safe_text(value, limit)
    if isinstance(value, dict):
        return {safe_text(str(k), 100): _safe(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v, limit) for v in value]
    return value


def preview(raw: bytes | None, limit: int = PREVIEW) -> str:
    """Bytes shown safely: as text where they are UTF-8, escaped where not, cut short with
    their size."""
    if raw is None:
        return "(none)"
    text = safe_text(raw[:limit].decode("utf-8", errors="backslashreplace"))
    return f"{text}… ({len(raw)} bytes)" if len(raw) > limit else text


def token_facts(raw: bytes) -> dict[str, Any]:
    """A token's id, holder, grants and expiry, read without checking it; never its value."""
    try:
        claims = decode_token(raw)
    except TokenError as exc:
        return {"error": f"{exc.reason}: {exc}"}
    return {
        "id": claims.token_id,
        "holder": claims.holder,
        "grants": [str(g) for g in claims.grants],
        "expires": _iso(claims.expires * 1000),
        "delegated": claims.parent is not None,
    }


def describe(received: Received, topic: str | None = None) -> dict[str, Any]:
    """``received`` as a JSON-ready dictionary (``topic``: the logical name to show)."""
    record, intent, context = received.record, received.intent, received.context
    raw_type = header(record.headers, TYPE_HEADER)
    out: dict[str, Any] = {
        "topic": topic or record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": _iso(record.timestamp),
        "key": None if record.key is None else preview(record.key),
        "type": None if raw_type is None else preview(raw_type),
    }
    if context is not None:
        out["principal"] = context.principal
        out["trace_id"] = context.trace_id
        out["intent_id"] = context.intent_id
    token = header(record.headers, TOKEN_HEADER)
    if token is not None:
        out["token"] = token_facts(token)
    elif context is not None and context.capabilities:
        out["capabilities"] = [str(c) for c in context.capabilities]
    if header(record.headers, MAC_HEADER) is not None:
        out["sealed"] = True
    if intent is not None:
        out["intent"] = intent.model_dump(mode="json")
    else:
        out["value"] = preview(record.value)
    facts = SetAside.of(record)
    if facts is not None:
        out["set_aside"] = {
            "reason": facts.reason,
            "error": facts.error,
            "source": facts.source,
            "reactor": facts.reactor,
            "missing": list(facts.missing),
            "truncated": facts.truncated,
            "original_size": facts.original_size,
            **facts.details,
        }
    others = {
        safe_text(name, 100): "(hidden)" if _secret(name) else preview(raw)
        for name, raw in record.headers
        if name not in _SHOWN_ELSEWHERE
    }
    if others:
        out["headers"] = others
    return _safe(out)  # previews are cut already; every other string is cut here


def as_line(described: dict[str, Any]) -> str:
    """One record for a terminal: where and what, then its fields, then why it was set aside."""
    d = described
    head = f"{d['topic']} {d['partition']}/{d['offset']} {d['timestamp']}"
    what = d["type"] or "(no type)"
    parts = [f"{head} {what}", f"key={d['key']}"]
    if d.get("principal"):
        parts.append(f"principal={d['principal']}")
    if d.get("trace_id"):
        parts.append(f"trace={d['trace_id']}")
    token = d.get("token")
    if token is not None:
        parts.append(
            f"token={token['id']} holder={token['holder']} grants={','.join(token['grants'])}"
            if "id" in token
            else f"token=({token['error']})"
        )
    body = orjson.dumps(d["intent"]).decode() if "intent" in d else f"undecoded: {d['value']}"
    lines = [safe_text(" ".join(parts)), f"  {safe_text(body)}"]
    aside = d.get("set_aside")
    if aside is not None:
        why = [f"reason={aside['reason']}"]
        for name in ("source", "reactor"):
            if aside.get(name):
                why.append(f"{name}={aside[name]}")
        if aside["missing"]:
            why.append(f"missing={','.join(aside['missing'])}")
        if aside["truncated"]:
            why.append(f"truncated (of {aside['original_size']} bytes)")
        lines.append(f"  set aside: {safe_text(' '.join(why))}")
        if aside.get("error"):
            lines.append(f"  error: {safe_text(aside['error'], 500)}")
    return "\n".join(lines)


def _secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _iso(ms: int) -> str:
    """A time in milliseconds as ISO 8601 (as a number where no calendar has it: any
    timestamp can be produced)."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    except (ValueError, OverflowError, OSError):
        return f"{ms} ms since the epoch"
