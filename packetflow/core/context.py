"""Context: who asked, why, within which trace, with what rights and until when.

Every intent travels with a context. A reactor's emitted intents carry ``inherit``-ed
context (new span, this hop appended to the trace, causation pointing at the intent that
caused them), so any record can be followed back to the HTTP call or CLI command that began it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from packetflow.core.capability import Capability, CapabilityLike, as_capability


def new_id() -> str:
    """A 128-bit random id in hex (trace, intent and correlation ids); unique, not secret."""
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    """A 64-bit random span id in hex."""
    return f"{random.getrandbits(64):016x}"


_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_.\-]*$")


class Context(BaseModel):
    """The product type that rides along with every intent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    intent_id: str = Field(default_factory=new_id)
    trace_id: str = Field(default_factory=new_id)
    span_id: str = Field(default_factory=new_span_id)
    parent_span_id: str | None = None
    causation_id: str | None = None
    correlation_id: str | None = None
    principal: str | None = None
    capabilities: tuple[Capability, ...] = ()
    deadline: AwareDatetime | None = None  # a time zone is required: naive times are ambiguous
    reply_to: str | None = None
    requester: str | None = None  # who waits for the reply: replies are keyed by it
    trace: tuple[str, ...] = ()
    baggage: dict[str, str] = Field(default_factory=dict)
    # A signed capability token (``packetflow.core.tokens``): the held capabilities, verified
    # by every worker; travels in its own ``pf-token`` header and into every emitted intent.
    token: str | None = None

    @field_validator("token")
    @classmethod
    def _check_token(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN_CHARS.match(value):
            raise ValueError("a capability token holds only base64url characters and dots")
        return value or None

    @classmethod
    def new(
        cls,
        principal: str | None = None,
        capabilities: Iterable[CapabilityLike] = (),
        *,
        deadline: datetime | None = None,
        baggage: Mapping[str, str] | None = None,
        token: str | None = None,
        **extra: Any,
    ) -> Context:
        """A root context: fresh trace, correlation id equal to the first intent's id.

        Authority comes from a signed ``token`` or, for topologies that accept them, plain
        ``capabilities``; not both (a token, when present, is all a worker looks at).
        """
        caps = tuple(as_capability(c) for c in capabilities)
        if token and caps:
            raise ValueError("give a signed token or plain capabilities, not both")
        intent_id = new_id()
        return cls(
            intent_id=intent_id,
            correlation_id=extra.pop("correlation_id", intent_id),
            principal=principal,
            capabilities=caps,
            deadline=deadline,
            baggage=dict(baggage or {}),
            token=token,
            **extra,
        )

    # -- propagation -------------------------------------------------------------------

    def inherit(self, hop: str) -> Context:
        """The context of an intent caused by this one: new intent id and span, same trace."""
        return self._derive(
            {
                "intent_id": new_id(),
                "span_id": new_span_id(),
                "parent_span_id": self.span_id,
                "causation_id": self.intent_id,
                "correlation_id": self.correlation_id or self.intent_id,
                "trace": (*self.trace, hop),
            }
        )

    def _derive(self, changes: dict[str, Any]) -> Context:
        """``model_copy(update=...)`` minus its overhead, for values already known valid.

        The engine derives a context for every emitted intent, so this is on the hot path.
        """
        new = Context.__new__(Context)
        values = self.__dict__.copy()
        values.update(changes)
        object.__setattr__(new, "__dict__", values)
        object.__setattr__(
            new, "__pydantic_fields_set__", self.__pydantic_fields_set__ | changes.keys()
        )
        object.__setattr__(new, "__pydantic_extra__", None)
        object.__setattr__(new, "__pydantic_private__", None)
        return new

    def copy_as_is(self) -> Context:
        """An identical context (``copy`` propagation): same ids, same span."""
        return self.model_copy()

    # -- composition -------------------------------------------------------------------

    def merge(self, other: Context) -> Context:
        """Union of capabilities and baggage; traces joined; the earlier deadline wins."""
        caps = tuple(dict.fromkeys((*self.capabilities, *other.capabilities)))
        deadlines = [d for d in (self.deadline, other.deadline) if d is not None]
        return self.model_copy(
            update={
                "capabilities": caps,
                "trace": (*self.trace, *(h for h in other.trace if h not in self.trace)),
                "baggage": {**self.baggage, **other.baggage},
                "deadline": min(deadlines) if deadlines else None,
            }
        )

    def override(self, **changes: Any) -> Context:
        """A copy with the given fields replaced (capabilities accept strings)."""
        if "capabilities" in changes:
            changes["capabilities"] = tuple(as_capability(c) for c in changes["capabilities"])
        return self.model_copy(update=changes)

    def with_capabilities(self, *capabilities: CapabilityLike) -> Context:
        """A copy that also holds ``capabilities``."""
        extra = tuple(as_capability(c) for c in capabilities)
        return self.model_copy(
            update={"capabilities": tuple(dict.fromkeys((*self.capabilities, *extra)))}
        )

    def expired(self, now: datetime | None = None) -> bool:
        if self.deadline is None:
            return False
        return (now or datetime.now(UTC)) > self.deadline
