"""A worker asked to serve HTTP on an address in use does not start, says why, and lets go
of what it had started (the MCP mount's sessions and client included)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from support.running import running
from support.webshop import shop

from packetflow.mcp import McpMount
from packetflow.web import HttpService


async def test_an_address_in_use_fails_the_start_and_leaves_nothing_running() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mount = McpMount()
        service = HttpService(f"127.0.0.1:{port}", mounts=[mount])
        with pytest.raises(OSError, match=f"cannot serve on 127.0.0.1:{port}: the address"):
            async with running(shop(), "memory://port-taken", services=[service]):
                pass
    left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert left == []
    assert mount.app is not None and mount.app.host.http.is_closed
