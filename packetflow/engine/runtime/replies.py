"""Request/reply: waiting for the answer to an intent.

A topology has one reply topic, ``<topology>.replies``; a reply is keyed by its requester's
id (``context.requester``), so every requester (a client, the CLI, a worker asking an actor,
the web and MCP servers) reads only the partition its id maps to, from its end: no topic per
client, none per restart. A request names ``reply_to`` (that topic) and ``requester``; the
reply's context has the request's intent id as its ``causation_id``, which is how a waiting
requester knows its answer. When the engine sets a request aside instead, it answers with a
:class:`~packetflow.core.replies.Refused`. Replies are sealed by the worker that sent them;
a requester that holds the worker secret checks the seal, one that does not trusts the
reply topic's ACLs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.replies import Refused
from packetflow.engine.codec import (
    CONTEXT_HEADER,
    MAC_HEADER,
    TOKEN_HEADER,
    TYPE_HEADER,
    decode_context,
    header,
    sealed_authority,
)
from packetflow.engine.security.seal import Sealer
from packetflow.engine.transport import END, Follower, Record, Transport, partition_for_key
from packetflow.engine.transport.following import follow_forever, stop_following

log = logging.getLogger("packetflow.replies")


@dataclass(frozen=True)
class Reply:
    """An answer: its intent (a :class:`Refused` when the request was set aside) and record."""

    intent: Intent
    context: Context
    record: Record


class ReplyWaiter:
    """Receives the replies addressed to one requester (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        topic: str,
        requester: str,
        types: Mapping[str, type[Intent]],
        sealer: Sealer | None = None,
    ) -> None:
        self.transport = transport
        self.topic = topic  # physical
        self.requester = requester
        self._key = requester.encode()
        self._types: dict[str, type[Intent]] = {**types, Refused.intent_type: Refused}
        self._sealer = sealer
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._follower: Follower | None = None
        self._task: asyncio.Task[None] | None = None
        self.partition = -1

    async def start(self) -> None:
        try:
            count = await self.transport.partitions_for(self.topic)
        except LookupError:
            count = 0
        if count < 1:
            raise LookupError(
                f"no reply topic {self.topic!r} yet: a worker of the topology creates it"
            )
        self.partition = partition_for_key(self._key, count)
        follower = self.transport.follow(self.topic, count, only=self.partition, start=END)
        await follower.start()
        self._follower = follower
        self._task = asyncio.create_task(follow_forever(follower, self._read, "replies", log))

    async def stop(self) -> None:
        task, follower, self._task, self._follower = self._task, self._follower, None, None
        await stop_following(task, follower)
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    def expect(self, request_id: str) -> asyncio.Future[Reply]:
        """A future for the reply to the request whose intent id is ``request_id``."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    def _read(self, records: list[Record]) -> None:
        for record in records:
            if record.key == self._key:
                self._take(record)

    def _take(self, record: Record) -> None:
        headers = record.headers
        context_raw = header(headers, CONTEXT_HEADER)
        type_raw = header(headers, TYPE_HEADER)
        try:
            context = decode_context(context_raw, None, header(headers, TOKEN_HEADER))
        except ValueError:
            return
        future = self._waiting.pop(context.causation_id or "", None)
        if future is None or future.done():
            return
        if self._sealer is not None:
            why = self._sealer.verify(
                header(headers, MAC_HEADER),
                record.topic,
                record.key,
                type_raw or b"",
                record.value or b"",
                context_raw,
                sealed_authority(headers),
            )
            if why is not None:
                log.warning("a reply to %s is not a worker's: %s", context.causation_id, why)
                self._waiting[context.causation_id or ""] = future  # the real one may come
                return
        cls = self._types.get((type_raw or b"").decode(errors="replace"))
        if cls is None or record.value is None:
            future.set_exception(
                LookupError(
                    f"a reply of type {type_raw!r}, which the topology does not know: name it "
                    "in its reactor's emits="
                )
            )
            return
        try:
            intent = cls.model_validate_json(record.value)
        except ValueError as exc:
            future.set_exception(exc)
            return
        future.set_result(Reply(intent, context, record))
