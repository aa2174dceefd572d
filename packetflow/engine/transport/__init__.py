"""Transports: how the engine reaches a broker.

``base.py`` is the contract (producer, group consumer, follower, admin) and imports none of
its implementations; ``kafka.py`` (aiokafka, a real cluster), ``rdkafka.py`` (the same with
its consumer and producer on librdkafka) and ``memory.py`` (in-process, deterministic) meet
it; ``url.py`` parses broker URLs and ``partitioner.py`` is Kafka's key
hashing. :func:`open_transport` picks the implementation by the URL's scheme. May import:
``packetflow.core`` and ``packetflow.engine.clock``.
"""

from __future__ import annotations

import os
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

KAFKA_CLIENTS = ("aiokafka", "librdkafka")
DEFAULT_KAFKA_CLIENT = "aiokafka"


def _kafka(url: str, parsed: BrokerURL) -> Transport:
    """``kafka://``: on aiokafka, or (``?client=librdkafka``) its hot path on librdkafka;
    without ``client=``, ``$PACKETFLOW_KAFKA_CLIENT`` or the default."""
    client = (
        parsed.options.get("client")
        or os.environ.get("PACKETFLOW_KAFKA_CLIENT")
        or DEFAULT_KAFKA_CLIENT
    )
    if client == "librdkafka":
        from packetflow.engine.transport.rdkafka import RdKafkaTransport

        return RdKafkaTransport(url, parsed.location, parsed.options, parsed)
    if client != "aiokafka":
        raise BrokerURLError(f"client={client}: use one of {', '.join(KAFKA_CLIENTS)}")
    return KafkaTransport(url, parsed.location, parsed.options, parsed)


# scheme -> how a transport is made from its parsed URL
SCHEMES: dict[str, Callable[[str, BrokerURL], Transport]] = {
    "kafka": _kafka,
    "memory": lambda url, parsed: MemoryTransport(url, parsed.location or "default"),
}


def open_transport(url: str) -> Transport:
    """The transport for ``kafka://host:port`` or ``memory://[name]``."""
    parsed = BrokerURL.parse(url)
    return SCHEMES[parsed.scheme](url, parsed)


__all__ = [
    "BEGINNING",
    "BROKER_MAX_MESSAGE_BYTES",
    "DEFAULT_KAFKA_CLIENT",
    "END",
    "KAFKA_CLIENTS",
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
