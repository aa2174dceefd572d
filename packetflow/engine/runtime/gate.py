"""The guard for ways in that run outside a worker (``packetflow mcp serve``, say): a
:class:`~packetflow.engine.security.guard.Guard` with the topology's trusted keys, kept
current by the revocations topic, so a request is refused with the same reasons a worker
would give its record, before anything is published.

:func:`authorize_way_in` is the check itself, shared with the worker's view
(``WorkerView.authorize``): a context's token (or plain capabilities where the topology
takes them) against what is required.
"""

from __future__ import annotations

import contextlib
import logging

import orjson

from packetflow.core.context import Context
from packetflow.engine.clock import WALL_CLOCK, Clock
from packetflow.engine.runtime.lifecycle import Lifecycle
from packetflow.engine.security import Guard, RevocationFollower, SecuritySettings
from packetflow.engine.security.guard import Denial
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Record, Transport

log = logging.getLogger("packetflow.security")


def authorize_way_in(
    guard: Guard, required: tuple[tuple[str, str], ...], context: Context, what: str
) -> Denial | None:
    """None: allowed (``context.capabilities`` then holds the granted ones); else why not."""
    token = context.token.encode() if context.token else None
    if not required and token is None:
        return None  # nothing asked for, nothing presented
    caps = orjson.dumps([str(c) for c in context.capabilities]) if context.capabilities else b""
    return guard.authorize(required, token, caps, context, what)


class Gate(Lifecycle):
    """``async with Gate(transport, topology) as gate: gate.authorize(...)``."""

    def __init__(
        self,
        transport: Transport,
        topology: Topology,
        *,
        security: SecuritySettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__()
        self.transport = transport
        self.topology = topology
        self.guard = Guard(topology.hierarchy, security or topology.security, clock or WALL_CLOCK)
        self._revocations: RevocationFollower | None = None

    async def _open(self, resources: contextlib.AsyncExitStack) -> None:
        topology = self.topology
        await self.transport.start()
        resources.push_async_callback(self.transport.stop)
        await self.transport.ensure_topics(topology.topic_specs())
        follower = self._revocations = RevocationFollower(
            self.transport,
            topology.physical(topology.revocations_topic),
            self._apply,
            self.guard.refresh_keys,
        )
        resources.push_async_callback(follower.stop)
        await follower.start()

    def _apply(self, records: list[Record]) -> None:
        for rev in self.guard.apply(records):
            log.info("revocation applied: %s %s", rev.kind, rev.subject)

    def authorize(
        self, required: tuple[tuple[str, str], ...], context: Context, what: str
    ) -> Denial | None:
        """Check ``context`` against ``required`` now (see :func:`authorize_way_in`)."""
        if self._revocations is not None:
            self._revocations.poll_now()
        return authorize_way_in(self.guard, required, context, what)
