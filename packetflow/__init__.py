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
from packetflow.engine.client import Client, Received
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
    "Parallel",
    "Pipeline",
    "Received",
    "Reply",
    "Retry",
    "Sequential",
    "TestDriver",
    "Topology",
    "TopologyError",
    "Worker",
    "call",
    "emit",
    "fan_out",
    "parallel",
    "pipeline",
    "reply",
    "retry",
    "sequential",
    "when",
]
