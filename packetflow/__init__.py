"""PacketFlow: typed intents, capabilities and reactors on a batch-first asyncio Kafka engine."""

from packetflow.core.capability import Capability, CapabilityHierarchy
from packetflow.core.context import Context
from packetflow.core.effects import (
    Call,
    Conditional,
    Delivery,
    Effect,
    Emit,
    FanOut,
    Parallel,
    Pipeline,
    Reply,
    Retry,
    Sequential,
    call,
    emit,
    fan_out,
    parallel,
    pipeline,
    reply,
    retry,
    sequential,
    when,
)
from packetflow.core.intent import Intent
from packetflow.core.replies import Refused
from packetflow.core.tokens import (
    Issuer,
    KeyPair,
    TokenError,
    decode_token,
    delegate_token,
    issue_token,
    verify_token,
)
from packetflow.engine.client import AskTimeout, Client, Received, ReplayReport, RequestRefused
from packetflow.engine.replay import ReplaySelection
from packetflow.engine.runtime.worker import Worker
from packetflow.engine.security import KeyStore, Security
from packetflow.engine.setaside import SetAside
from packetflow.engine.testing import TestDriver
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.topology import default_broker_url as _default_broker_url

__version__ = "0.1.0"


async def send(
    topology: Topology,
    intent: Intent,
    *,
    context: Context | None = None,
    broker: str | None = None,
    topic: str | None = None,
    key: str | None = None,
) -> Delivery:
    """Publish one intent to its topic on ``broker`` (default: the topology's, else
    ``$PACKETFLOW_BROKER``) and wait for the acknowledgement. A connection per call: for
    many intents, ``async with Client(url, topology) as client`` and ``client.send``."""
    async with Client(broker or topology.broker or _default_broker_url(), topology) as client:
        return await client.send(intent, context=context, topic=topic, key=key)


__all__ = [
    "AskTimeout",
    "Call",
    "Capability",
    "CapabilityHierarchy",
    "Client",
    "Conditional",
    "Context",
    "Delivery",
    "Effect",
    "Emit",
    "FanOut",
    "Intent",
    "Issuer",
    "KeyPair",
    "KeyStore",
    "Parallel",
    "Pipeline",
    "Received",
    "Refused",
    "ReplayReport",
    "ReplaySelection",
    "Reply",
    "RequestRefused",
    "Retry",
    "Security",
    "Sequential",
    "SetAside",
    "TestDriver",
    "TokenError",
    "Topology",
    "TopologyError",
    "Worker",
    "call",
    "decode_token",
    "delegate_token",
    "emit",
    "fan_out",
    "issue_token",
    "parallel",
    "pipeline",
    "reply",
    "retry",
    "send",
    "sequential",
    "verify_token",
    "when",
]
