"""Transports: how the engine reaches a broker.

``base.py`` is the contract (producer, group consumer, follower, admin) and imports none of
its implementations; ``kafka.py`` (aiokafka, a real cluster) and ``memory.py`` (in-process,
deterministic) meet it; ``url.py`` parses broker URLs and ``partitioner.py`` is Kafka's key
hashing. :func:`open_transport` picks the implementation by the URL's scheme. May import:
``packetflow.core`` and ``packetflow.engine.clock``.
"""

from __future__ import annotations

from collections.abc import Callable

from packetflow.engine.transport.base import (
    BEGINNING,
    BROKER_MAX_MESSAGE_BYTES,
    END,
    Acked,
    BrokerError,
    Committed,
    Consumer,
    Follower,
    Headers,
    Producer,
    RebalanceListener,
    Record,
    StartAt,
    TopicPartition,
    TopicSpec,
    Transport,
    record_bytes,
)
from packetflow.engine.transport.kafka import KafkaTransport
from packetflow.engine.transport.memory import MemoryTransport
from packetflow.engine.transport.partitioner import partition_for_key
from packetflow.engine.transport.url import BrokerURL, BrokerURLError

# scheme -> how a transport is made from its parsed URL
SCHEMES: dict[str, Callable[[str, BrokerURL], Transport]] = {
    "kafka": lambda url, parsed: KafkaTransport(url, parsed.location, parsed.options, parsed),
    "memory": lambda url, parsed: MemoryTransport(url, parsed.location or "default"),
}


def open_transport(url: str) -> Transport:
    """The transport for ``kafka://host:port`` or ``memory://[name]``."""
    parsed = BrokerURL.parse(url)
    return SCHEMES[parsed.scheme](url, parsed)


__all__ = [
    "BEGINNING",
    "BROKER_MAX_MESSAGE_BYTES",
    "END",
    "SCHEMES",
    "Acked",
    "BrokerError",
    "BrokerURL",
    "BrokerURLError",
    "Committed",
    "Consumer",
    "Follower",
    "Headers",
    "Producer",
    "RebalanceListener",
    "Record",
    "StartAt",
    "TopicPartition",
    "TopicSpec",
    "Transport",
    "open_transport",
    "partition_for_key",
    "record_bytes",
]
