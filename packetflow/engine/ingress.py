"""Untrusted JSON and a token, made into an intent and its context: the one way in from
outside the Python API.

The CLI's ``send``, the web's ``POST`` and an MCP tool call all take the same fields::

    {"type": "orders.Deposit", "data": {...}, "token": "...", "principal": "...",
     "capabilities": ["op:resource"], "key": "...", "topic": "..."}

:func:`submission` validates them against the topology (its intent types, the intent's
own model) and raises :class:`IngressError` with one line that says what is wrong.
:func:`hopeless` says what the topology's workers could only refuse (an internal type, a
past deadline, no token where one is needed, an expired token, a principal that is not the
token's holder), so an interface can answer at once instead of after a round trip. Neither
authorises anything: the workers' guard does, on every record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.tokens import TokenError, decode_token
from packetflow.engine.topology import Topology, TopologyError


class IngressError(ValueError):
    """Fields that do not make an intent of the topology: the message is one line."""


@dataclass(frozen=True)
class Submission:
    """An intent to publish, with its context and where it goes (None: its type's topic,
    keyed by its key field)."""

    intent: Intent
    context: Context
    key: str | None = None
    topic: str | None = None


def holder_of(token: str) -> str | None:
    """Who a token names as its holder (None when it cannot be decoded: the workers say)."""
    try:
        return decode_token(token).holder
    except ValueError:
        return None


def submission(
    topology: Topology, fields: Mapping[str, Any], *, deadline: float | None = None
) -> Submission:
    """The intent, context, key and topic that ``fields`` describe (see the module
    docstring); ``deadline``: seconds from now until the intent expires."""
    capabilities = fields.get("capabilities") or []
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise IngressError('"capabilities" must be a list of "operation:resource" strings')
    for name in ("key", "topic", "token", "principal"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise IngressError(f'"{name}" must be a string')
    token = fields.get("token") or None
    principal = fields.get("principal")
    if token is not None:
        if capabilities:
            raise IngressError('give "token" or "capabilities", not both')
        try:
            holder = decode_token(token).holder
        except TokenError as exc:
            raise IngressError(f"token: {exc.message}") from None
        principal = principal or holder
    data = fields.get("data") or {}
    if not isinstance(data, dict):
        raise IngressError('"data" must be a JSON object of the intent\'s fields')
    try:
        cls = topology.intent_type(str(fields.get("type")))
        intent = cls.model_validate(data)
        context = Context.new(
            principal,
            capabilities,
            deadline=(
                datetime.now(UTC) + timedelta(seconds=deadline) if deadline is not None else None
            ),
            token=token,
        )
    except TopologyError as exc:
        raise IngressError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "value"
        raise IngressError(f"{exc.title}: {loc}: {first['msg']}") from None
    except ValueError as exc:  # e.g. Capability.parse(":x") raises a plain ValueError
        raise IngressError(str(exc)) from None
    return Submission(intent, context, fields.get("key"), fields.get("topic"))


@dataclass(frozen=True)
class Hopeless:
    """What workers would do with a submission, and why: ``code`` is one of ``internal``,
    ``deadline``, ``no-token``, ``expired``, ``principal-mismatch``."""

    code: str
    message: str


def hopeless(topology: Topology, item: Submission, now: float | None = None) -> Hopeless | None:
    """Why the topology's workers could only deny or dead-letter ``item``, or None."""
    now = time.time() if now is None else now
    intent, context = item.intent, item.context
    cls = type(intent)
    what = cls.intent_type
    if cls.internal:
        return Hopeless(
            "internal",
            f"{what} is internal: only workers emit it (sealed with the worker secret), "
            "so workers would deny this one",
        )
    if context.deadline is not None and context.deadline.timestamp() <= now:
        return Hopeless(
            "deadline",
            f"the deadline of this {what} has already passed: workers would dead-letter it",
        )
    required = intent.requirements()
    if not required:
        return None
    needs = ", ".join(f"{op}:{res}" for op, res in required)
    if context.token is None:
        if topology.security.allow_unsigned:
            return None
        return Hopeless(
            "no-token",
            f"{what} requires {needs} and topology {topology.name} accepts signed tokens only",
        )
    claims = decode_token(context.token)
    if claims.expires <= now:
        expired = datetime.fromtimestamp(claims.expires, UTC).isoformat()
        why = f"the token of {claims.holder} expired at {expired}: workers would deny this"
        return Hopeless("expired", why)
    if context.principal is not None and context.principal != claims.holder:
        return Hopeless(
            "principal-mismatch",
            f"principal {context.principal} is not the token's holder ({claims.holder}): "
            "workers would deny this (principal-mismatch)",
        )
    return None
