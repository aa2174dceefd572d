"""Observability: the worker's metrics in Prometheus' format, health, structured logs and
the servers that carry them.

Lives in the interfaces layer, below ``web`` (which serves these endpoints when ``--http``
is on) and above the engine (it reads the worker view and the metrics registry); imports
nothing from ``web``, ``mcp`` or ``cli``.
"""

from packetflow.observability.logs import JsonFormatter, configure_logging
from packetflow.observability.prometheus import EngineCollector, exposition
from packetflow.observability.server import AsgiServer
from packetflow.observability.service import MetricsService

__all__ = [
    "AsgiServer", "EngineCollector", "JsonFormatter", "MetricsService", "configure_logging",
    "exposition",
]  # fmt: skip
