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
from packetflow.core.tokens import (
    Issuer,
    KeyPair,
    TokenError,
    decode_token,
    delegate_token,
    issue_token,
    verify_token,
)
from packetflow.engine.client import Client, Received
from packetflow.engine.security import KeyStore, Security
from packetflow.engine.testing import TestDriver
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.worker import Worker

__version__ = "0.1.0"

__all__ = [
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
    "Reply",
    "Retry",
    "Security",
    "Sequential",
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
    "sequential",
    "verify_token",
    "when",
]
