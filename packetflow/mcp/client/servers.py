"""The MCP servers a topology calls, as declared (:class:`StdioServer`, :class:`HttpServer`),
and one worker's session with each (:class:`Connection`).

A declaration names where credentials come from (environment variable names), never their
values: a worker reads them when it starts (:meth:`ServerDecl.resolve`), keeps them in
memory only, and never logs them or puts them in a result. A connection is the official
``mcp`` SDK's :class:`mcp.Client`, opened on first use, kept open by a task of its own (the
SDK's transports are anyio context managers, which must be left by the task that entered
them) and opened again after it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

log = logging.getLogger("packetflow.mcp.client")

OPEN_TIMEOUT = 30.0  # s: starting a server process or reaching a URL, and listing its tools


class ServerError(RuntimeError):
    """A server that cannot be used as declared (a variable missing from the environment)."""


@dataclass(frozen=True, kw_only=True)
class ServerDecl:
    """What every server declaration says: which tools are idempotent (overriding the
    server's ``idempotent_hint``), and how often an idempotent call is tried at most."""

    idempotent: Mapping[str, bool] = field(default_factory=dict)
    attempts: int = 3

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def resolve(self, name: str) -> Resolved:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class StdioServer(ServerDecl):
    """A server the worker starts as a subprocess and talks to over its stdin/stdout.
    ``env_from``: variables of the worker's environment the process gets (besides the SDK's
    safe defaults: ``PATH``, ``HOME``, ...)."""

    command: Sequence[str]
    env_from: Sequence[str] = ()
    cwd: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.command:
            raise ValueError("a stdio MCP server needs a command")

    def resolve(self, name: str) -> Resolved:
        env = _from_env(name, {v: v for v in self.env_from})
        params = StdioServerParameters(
            command=self.command[0], args=list(self.command[1:]), env=env or None, cwd=self.cwd
        )
        return Resolved(name, self, params=params)

    def describe(self) -> str:
        passed = f" (env {', '.join(self.env_from)})" if self.env_from else ""
        return f"stdio: {' '.join(self.command)}{passed}"


@dataclass(frozen=True)
class HttpServer(ServerDecl):
    """A server reached over Streamable HTTP at ``url``. ``headers_env``: request headers
    whose values are read from these environment variables (``{"Authorization":
    "WEATHER_AUTH"}``)."""

    url: str
    headers_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"an HTTP MCP server's url is http:// or https://: {self.url}")

    def resolve(self, name: str) -> Resolved:
        return Resolved(name, self, headers=_from_env(name, self.headers_env))

    def describe(self) -> str:
        headers = ", ".join(f"{h} from ${v}" for h, v in self.headers_env.items())
        where = f"http: {_without_userinfo(self.url)}"
        return f"{where} (headers: {headers})" if headers else where


@dataclass(frozen=True)
class Resolved:
    """A declaration with its credentials read from the environment (not in its repr)."""

    name: str
    decl: ServerDecl
    params: StdioServerParameters | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Client]:
        """An initialised client session with the server."""
        if self.params is not None:
            async with Client(self.params) as client:
                yield client
            return
        assert isinstance(self.decl, HttpServer)
        # the SDK's default timeouts (30 s; 5 min between bytes of a stream): the call's
        # own timeout bounds the call
        http = httpx2.AsyncClient(
            headers=dict(self.headers), timeout=httpx2.Timeout(OPEN_TIMEOUT, read=300.0)
        )
        async with http, Client(streamable_http_client(self.decl.url, http_client=http)) as client:
            yield client


def _from_env(server: str, wanted: Mapping[str, str]) -> dict[str, str]:
    """``{name: value of the variable it names}``; a missing variable stops the worker."""
    missing = sorted(var for var in wanted.values() if var not in os.environ)
    if missing:
        raise ServerError(
            f"MCP server {server}: {', '.join('$' + m for m in missing)} not set in the "
            "worker's environment"
        )
    return {name: os.environ[var] for name, var in wanted.items()}


def _without_userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}"


class Connection:
    """One worker's session with one server: opened on first use, shared by its calls,
    opened again after it broke (:meth:`broken`)."""

    def __init__(self, server: Resolved) -> None:
        self.server = server
        self.name = server.name
        self._lock = asyncio.Lock()
        self._client: Client | None = None
        self._idempotent: dict[str, bool] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def client(self) -> Client:
        """The open session (opened now if it is not)."""
        async with self._lock:
            if self._client is None:
                await self._open()
            assert self._client is not None
            return self._client

    async def idempotent(self, tool: str) -> bool:
        """Whether ``tool`` may be called again safely: the declaration says, else the
        server's ``idempotent_hint`` (the session is opened to know it)."""
        declared = self.server.decl.idempotent.get(tool)
        if declared is not None:
            return declared
        await self.client()
        return self._idempotent.get(tool, False)

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[tuple[Client, dict[str, bool]]] = loop.create_future()
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._hold(ready), name=f"mcp session {self.name}")
        try:
            client, hints = await asyncio.wait_for(asyncio.shield(ready), OPEN_TIMEOUT)
        except BaseException:
            await self._end()
            raise
        self._client, self._idempotent = client, hints
        log.info("MCP server %s: session open (%d tools)", self.name, len(hints))

    async def _hold(self, ready: asyncio.Future[tuple[Client, dict[str, bool]]]) -> None:
        """Enter the session, list its tools, and hold it open until closed or broken."""
        try:
            async with self.server.open() as client:
                hints: dict[str, bool] = {}
                cursor: str | None = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    for tool in page.tools:
                        notes = tool.annotations
                        hints[tool.name] = bool(notes and notes.idempotent_hint)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                if not ready.done():
                    ready.set_result((client, hints))
                await self._closing.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except Exception as exc:  # the session could not open, or broke
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP server %s: session ended: %s", self.name, _one_line(exc))
        finally:
            self._client = None

    async def broken(self, client: Client) -> None:
        """A call on ``client`` failed in its transport: the next call opens a new session."""
        async with self._lock:
            if self._client is client:
                await self._end()

    async def _end(self) -> None:
        task, self._task = self._task, None
        self._client = None
        if task is None:
            return
        self._closing.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def close(self) -> None:
        async with self._lock:
            await self._end()


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe(servers: Mapping[str, ServerDecl]) -> dict[str, Any]:
    return {name: decl.describe() for name, decl in servers.items()}
