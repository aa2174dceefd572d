"""The web tests' shop served with its MCP app at ``/mcp``, and an official MCP client of
it with a bearer token (Streamable HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from packetflow.mcp import McpMount
from packetflow.web import HttpService
from support.running import Running, running
from support.webshop import shop


@asynccontextmanager
async def shop_with_mcp(broker: str, **options: Any) -> AsyncIterator[tuple[Running, str]]:
    """The shop on ``broker``, serving HTTP (and MCP at /mcp) on a free port: (run, url)."""
    service = HttpService("127.0.0.1:0", mounts=[McpMount()])
    async with running(shop(**options), broker, services=[service]) as run:
        yield run, f"{service.url}/mcp"


@asynccontextmanager
async def mcp_client(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP client session with ``token`` as its bearer token."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client
