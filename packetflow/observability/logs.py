"""Logs as text or as JSON lines (``--log-format json``).

A JSON line has the time, level, logger and message, and whatever the line was logged with:
the engine logs each record it sets aside with its topic, partition, offset, intent id,
trace id and reason (``engine.runtime.processor.record_fields``), so a line leads to the
record and to its trace.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and extras."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """The process's logging, on stderr."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format {fmt!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if level.lower() != "debug":  # aiokafka narrates every group join at INFO
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
