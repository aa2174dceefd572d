"""Where PacketFlow keeps its files on this machine (keys, the local Kafka)."""

from __future__ import annotations

import os
from pathlib import Path


def packetflow_home() -> Path:
    """``$PACKETFLOW_HOME``, else ``~/.cache/packetflow`` (user-expanded, not resolved)."""
    home = os.environ.get("PACKETFLOW_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "packetflow"
