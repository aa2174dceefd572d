"""Repartition: re-key a stream through an internal topic, so state for the new key is in one place.

``key_by`` on a reactor (or a window) puts this agent on the original topic: it forwards each
authorised record, bytes and headers unchanged, to ``<topology>.<name>.repartition`` keyed by
the new key, and the reactor reads that topic instead. Records with the same new key then
share a partition, and so a worker and a state store, wherever they started. The reactor
checks them again like any record; an internal intent is sealed anew for its new topic and
key (its seal covers both).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from packetflow.core.context import Context
from packetflow.core.intent import FieldOf, Intent, field_getter
from packetflow.engine.agent import AgentRuntime, AgentServices, AgentSpec, TopicDecl
from packetflow.engine.codec import CONTEXT_HEADER, MAC_HEADER, TOKEN_HEADER, header
from packetflow.engine.transport import Record

KeyBy = FieldOf


@dataclass(frozen=True, kw_only=True)
class Repartition(AgentSpec):
    """Forwards ``topic``'s intents to ``target`` keyed by ``key_by``."""

    kind: ClassVar[str] = "repartition"
    key_by: KeyBy
    target: str
    partitions: int | None = None

    def __post_init__(self) -> None:
        described = f"re-keys {self.topic} by {_describe(self.key_by)} into {self.target}"
        object.__setattr__(self, "description", described)

    def topics(self) -> list[TopicDecl]:
        return [TopicDecl(self.target, self.partitions, internal=True)]

    def describe(self) -> dict[str, Any]:
        return {"key_by": _describe(self.key_by), "to": self.target}

    def runtime(self, services: AgentServices) -> AgentRuntime:
        return _Repartitioner(services, field_getter(self.key_by, "key by"), self.target)


class _Repartitioner(AgentRuntime):
    def __init__(
        self, services: AgentServices, key_of: Callable[[Intent], Any], target: str
    ) -> None:
        self._producer = services.producer
        self._seal = services.seal
        self._key_of = key_of
        self._target = services.names.physical(target)

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        key = self._key_of(intent)
        raw = None if key is None else str(key).encode()
        headers = record.headers
        if type(intent).internal:
            headers = self._resealed(record, intent, raw)
        # the record's own timestamp: windows on event time = record time must not see the
        # time of the re-keying (a backlog re-keyed late would all land in the same window)
        stamp = record.timestamp if record.timestamp >= 0 else None  # -1: Kafka's "none"
        await self._producer.send(self._target, record.value, raw, headers, timestamp=stamp)

    def _resealed(
        self, record: Record, intent: Intent, key: bytes | None
    ) -> list[tuple[str, bytes]]:
        if self._seal is None:
            raise RuntimeError("this worker holds no worker secret to seal what it re-keys")
        kept = [(n, v) for n, v in record.headers if n != MAC_HEADER]
        mac = self._seal(
            self._target,
            key,
            type(intent).intent_type.encode(),
            record.value or b"",
            header(kept, CONTEXT_HEADER),
            header(kept, TOKEN_HEADER),
        )
        return [*kept, (MAC_HEADER, mac)]


def _describe(key_by: KeyBy) -> str:
    return key_by if isinstance(key_by, str) else getattr(key_by, "__name__", "a function")
