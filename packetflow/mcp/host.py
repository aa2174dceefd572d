"""Where an MCP server runs, as the server sees it: a guard to check callers with, a
client to publish and ask through, the audit, metrics and traces, and a way to read a
key's state from the worker that owns it.

Two hosts: inside a worker (:func:`in_worker`, the app mounted at ``/mcp`` of its HTTP
server: the worker's own guard, local state read in place) and on its own
(:func:`standalone`, ``packetflow mcp serve``: a :class:`~packetflow.engine.runtime.gate.
Gate` following the revocations topic; state always asked of the owner's HTTP server).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from packetflow.core.context import Context
from packetflow.engine.client import Client
from packetflow.engine.runtime.gate import Gate
from packetflow.engine.runtime.lookup import owner_of, partition_of
from packetflow.engine.runtime.members import Member
from packetflow.engine.runtime.metrics import MetricsRegistry
from packetflow.engine.runtime.tracing import Tracing
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.security.audit import Auditor
from packetflow.engine.security.guard import Denial
from packetflow.engine.topology import Topology
from packetflow.observability.group import read_members

HOP_HEADER = "x-packetflow-hops"  # the web's: a forwarded state read is never forwarded again


class StateUnavailable(Exception):
    """The key's owner is not known or did not answer (a rebalance, a restore): retry."""


Authorize = Callable[[tuple[tuple[str, str], ...], Context, str], Denial | None]


@dataclass
class Host:
    """What the MCP server uses of where it runs."""

    topology: Topology
    client: Client
    check: Authorize
    registry: MetricsRegistry
    tracing: Tracing | None = None
    view: WorkerView | None = None  # inside a worker

    def __post_init__(self) -> None:
        audit_topic = self.topology.audit_topic
        self.auditor = Auditor(
            self.topology.name,
            lambda value, key: self.client.send_raw(audit_topic, value, key=key),
        )
        self.http = httpx.AsyncClient(timeout=5.0)
        self._calls = registry_counter(self.registry)

    async def close(self) -> None:
        await self.http.aclose()

    def counted(self, tool: str, outcome: str) -> None:
        """One call of ``tool`` ended with ``outcome`` (``packetflow_mcp_calls_total``)."""
        self._calls(tool, outcome)

    async def authorize(
        self, required: tuple[tuple[str, str], ...], context: Context, what: str, source: str
    ) -> Denial | None:
        """The guard on one request; a refusal is audited (``source``: which MCP method)."""
        denial = self.check(required, context, what)
        if denial is not None:
            claims = denial.claims
            await self.auditor.record(
                "denied",
                time.time(),
                reason=denial.reason,
                error=denial.message[:1000],
                intent_type=what,
                principal=context.principal,
                holder=claims.holder if claims else None,
                token_id=claims.token_id if claims else None,
                missing=list(denial.missing) or None,
                source=source,
            )
        return denial

    async def state(self, name: str, key: str, token: str | None) -> dict[str, Any]:
        """``key``'s state in ``name`` with the offset it reflects, from the owning worker
        (already authorised here: the owner checks the token again)."""
        topic, partition = partition_of(self.topology, name, key)
        view = self.view
        if view is not None:
            physical = self.topology.physical(topic)
            if any(tp.topic == physical and tp.partition == partition for tp in view.restoring):
                raise StateUnavailable(f"{topic}[{partition}] is being restored")
            if view.owns(topic, partition):
                return {
                    "name": name,
                    "key": key,
                    "value": view.state(name, key),
                    "topic": topic,
                    "partition": partition,
                    "offset": view.processed(topic, partition),
                    "worker": view.instance_id,
                }
        owner = owner_of(await self._members(), topic, partition, besides=self._me())
        if owner is None:
            raise StateUnavailable(f"no worker is known to own {topic}[{partition}]")
        headers = {HOP_HEADER: "1"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        url = (
            f"http://{owner.advertised['http']}/state/{quote(name, safe='')}/{quote(key, safe='')}"
        )
        try:
            answer = await self.http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise StateUnavailable(f"the owner {owner.instance_id} did not answer: {exc}") from exc
        try:
            body = orjson.loads(answer.content) if answer.content else {}
        except orjson.JSONDecodeError:
            body = {"error": answer.text[:200]}
        if answer.status_code == 503:
            raise StateUnavailable(str(body.get("error") or body))
        if answer.status_code != 200:
            raise StateUnavailable(f"the owner answered {answer.status_code}: {body}")
        return dict(body)

    async def _members(self) -> list[Member]:
        if self.view is not None:
            return self.view.members()
        return list((await read_members(self.client)).values())

    def _me(self) -> str | None:
        return None if self.view is None else self.view.instance_id


def registry_counter(registry: MetricsRegistry) -> Callable[[str, str], None]:
    """Count MCP calls by tool and outcome in ``registry``."""

    def count(tool: str, outcome: str) -> None:
        registry.counter(
            "packetflow_mcp_calls_total",
            "MCP tool calls served, by tool and outcome",
            tool=tool,
            outcome=outcome,
        ).inc()

    return count


def in_worker(view: WorkerView, client: Client) -> Host:
    """The host of an MCP app a worker serves."""
    return Host(view.topology, client, view.authorize, view.metrics.registry, view.tracing, view)


def standalone(topology: Topology, client: Client, gate: Gate) -> Host:
    """The host of ``packetflow mcp serve``: no worker, a gate of its own."""
    return Host(topology, client, gate.authorize, MetricsRegistry())
