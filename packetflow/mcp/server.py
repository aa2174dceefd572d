"""The MCP server of one topology, on the SDK's low-level ``Server``: intents as tools,
state and set-aside records as resources, prompts; every request checked with the
caller's token by the host's guard (:mod:`packetflow.mcp.host`).

The caller's token: over Streamable HTTP the bearer token (the SDK's token verifier asks
the same guard, so a token that does not hold is a 401 before any method runs); over
stdio the one the server was started with. A tool call validates its arguments with the
intent's model, checks the token against the intent's requirements (a refusal is an MCP
tool error naming what is missing, audited, and nothing is published), publishes with the
token alone in its context (the worker checks it again, as any record), and returns the
intent's id and offset, or, with ``wait``, its reply through request/reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import mcp_types as types
import orjson
from mcp.server import Server
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware, get_access_token
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.engine.client import AskTimeout, RequestRefused
from packetflow.engine.describe import as_dict
from packetflow.engine.runtime.lookup import jsonable, read_requirement
from packetflow.engine.runtime.tracing import descend
from packetflow.mcp.host import Host, StateUnavailable
from packetflow.mcp.prompts import (
    EXPLAIN_DENIAL,
    SUMMARISE_DEAD_LETTERS,
    explain_denial,
    listing,
    summarise_dead_letters,
)
from packetflow.mcp.resources import (
    ResourceError,
    fixed_uris,
    observe,
    parse_state_uri,
    set_aside,
    state_names,
    summary,
)
from packetflow.mcp.tools import MAX_WAIT, may_use, tool_of, tool_types, wait_argument

log = logging.getLogger("packetflow.mcp")

INVALID_PARAMS = -32602
RESOURCE_NOT_FOUND = -32002
PATH = "/mcp"

# An extra tool and its handler (``propose_intent``): (tool, call(arguments, context)).
Extra = tuple[types.Tool, Callable[[dict[str, Any], Context], Awaitable[types.CallToolResult]]]


def text_result(body: dict[str, Any], *, error: bool = False) -> types.CallToolResult:
    """A tool result as JSON text and structured content."""
    text = orjson.dumps(body, default=str).decode()
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=body,
        is_error=error,
    )


class McpApp:
    """One topology's MCP server (``server``) on a host; ``token``: the stdio caller's."""

    def __init__(
        self, host: Host, *, token: str | None = None, extras: Sequence[Extra] = ()
    ) -> None:
        self.host = host
        self.topology = host.topology
        self.token = token
        self.types = {cls.intent_type: cls for cls in tool_types(self.topology)}
        self.extras = {tool.name: (tool, call) for tool, call in extras}
        self.server: Server[Any] = Server(
            f"packetflow-{self.topology.name}",
            version="1",
            instructions=(
                f"Tools publish the intents of the PacketFlow topology {self.topology.name}; "
                "each call is checked against your capability token. Pass `wait` (seconds) "
                "to get the reply."
            ),
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_list_resource_templates=self.list_resource_templates,
            on_read_resource=self.read_resource,
            on_list_prompts=self.list_prompts,
            on_get_prompt=self.get_prompt,
        )

    # -- who calls ---------------------------------------------------------------------

    def caller_token(self) -> str | None:
        """The bearer token of this HTTP request, else the stdio token."""
        access = get_access_token()
        return access.token if access is not None else self.token

    async def verify(self, token: str) -> AccessToken | None:
        """The SDK's token verifier: the guard's verdict on the token alone (a refusal is
        audited, and the SDK answers 401)."""
        context = Context.new(token=token)
        if await self.host.authorize((), context, "mcp", "mcp:authenticate") is not None:
            return None
        return AccessToken(
            token=token,
            client_id=context.principal or "anonymous",
            scopes=[str(c) for c in context.capabilities],
        )

    async def _granted(self) -> Context:
        """The caller's context, its token checked (over stdio it may have been revoked
        since the server started): what the caller holds, or an MCP error."""
        context = Context.new(token=self.caller_token())
        if context.token is None:
            return context
        denial = await self.host.authorize((), context, "mcp", "mcp:authenticate")
        if denial is not None:
            raise MCPError(INVALID_PARAMS, f"{denial.reason}: {denial.message}")
        return context

    # -- tools -------------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        held = (await self._granted()).capabilities
        hierarchy = self.topology.hierarchy
        tools = [tool_of(cls) for cls in self.types.values() if may_use(held, cls, hierarchy)]
        tools.extend(tool for tool, _ in self.extras.values())
        return types.ListToolsResult(tools=tools)

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name = params.name
        arguments = dict(params.arguments or {})
        context = await self._granted()
        if name in self.extras:
            result = await self.extras[name][1](arguments, context)
            self.host.counted(name, "error" if result.is_error else "ok")
            return result
        cls = self.types.get(name)
        if cls is None:
            self.host.counted(name, "unknown-tool")
            return text_result(
                {"reason": "unknown-tool", "error": f"no tool {name!r} in {self.topology.name}"},
                error=True,
            )
        outcome, result = await self._call(cls, arguments, context)
        self.host.counted(name, outcome)
        return result

    async def _call(
        self, cls: type[Intent], arguments: dict[str, Any], context: Context
    ) -> tuple[str, types.CallToolResult]:
        wait = arguments.pop(wait_argument(cls), None)
        if wait is not None and (
            not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 < wait <= MAX_WAIT
        ):
            return "invalid", text_result(
                {
                    "reason": "bad-wait",
                    "error": f"wait must be seconds, more than 0 and at most {MAX_WAIT:g}",
                },
                error=True,
            )
        try:
            intent = cls.model_validate(arguments)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            return "invalid", text_result(
                {
                    "reason": "invalid",
                    "error": f"{cls.intent_type}: {where}: {first['msg']}",
                    "errors": exc.errors(include_url=False, include_context=False),
                },
                error=True,
            )
        denial = await self.host.authorize(
            intent.requirements(), context, cls.intent_type, f"mcp:tools/call {cls.intent_type}"
        )
        if denial is not None:
            return "denied", text_result(
                {"reason": denial.reason, "error": denial.message, "missing": list(denial.missing)},
                error=True,
            )
        sent = Context.new(context.principal if context.token else None, token=context.token)
        tracing = self.host.tracing
        if tracing is None:
            return await self._publish(intent, sent, wait)
        attributes = {"mcp.tool": cls.intent_type, "packetflow.intent_type": cls.intent_type}
        with tracing.entry(f"mcp tools/call {cls.intent_type}", attributes) as ids:
            return await self._publish(intent, descend(sent, ids), wait)

    async def _publish(
        self, intent: Intent, sent: Context, wait: float | None
    ) -> tuple[str, types.CallToolResult]:
        client = self.host.client
        if wait is None:
            delivery = await client.send(intent, context=sent)
            return "published", text_result(
                {
                    "intent_id": sent.intent_id,
                    "topic": self.topology.topic_for(type(intent)),
                    "partition": delivery.partition,
                    "offset": delivery.offset,
                }
            )
        try:
            reply = await client.ask(intent, context=sent, timeout=float(wait))
        except RequestRefused as refused:
            return "refused", text_result(
                {"reason": refused.reason, "error": refused.error, "intent_id": sent.intent_id},
                error=True,
            )
        except AskTimeout as exc:
            return "timeout", text_result(
                {"reason": "timeout", "error": str(exc), "intent_id": sent.intent_id}, error=True
            )
        return "replied", text_result(
            {
                "intent_id": sent.intent_id,
                "type": type(reply).intent_type,
                "reply": reply.model_dump(mode="json"),
            }
        )

    # -- resources ---------------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        context = await self._granted()
        if self.host.check((observe(self.topology),), context, "resources/list") is not None:
            return types.ListResourcesResult(resources=[])
        return types.ListResourcesResult(
            resources=[
                types.Resource(uri=uri, name=name, description=text, mime_type="application/json")
                for uri, (name, text) in fixed_uris(self.topology).items()
            ]
        )

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        await self._granted()
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=f"state://{name}/{{key}}",
                    name=f"{name} state",
                    description=f"The state of {name} for one key, from the worker that owns "
                    "it, with the offset it reflects",
                    mime_type="application/json",
                )
                for name in state_names(self.topology)
            ]
        )

    async def read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        context = await self._granted()
        try:
            body = await self._read(uri, context)
        except ResourceError as exc:
            raise MCPError(RESOURCE_NOT_FOUND, str(exc)) from None
        except StateUnavailable as exc:
            raise MCPError(RESOURCE_NOT_FOUND, f"unavailable, retry: {exc}") from None
        text = orjson.dumps(body, default=jsonable).decode()
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
        )

    async def _read(self, uri: str, context: Context) -> Any:
        topology = self.topology
        if uri.startswith("state://"):
            name, key = parse_state_uri(topology, uri)
            need = read_requirement(topology, name, key)
        elif uri in fixed_uris(topology):
            need = observe(topology)
        else:
            raise ResourceError(f"no resource {uri} in {topology.name}")
        denial = await self.host.authorize((need,), context, uri, "mcp:resources/read")
        if denial is not None:
            raise MCPError(INVALID_PARAMS, f"{denial.reason}: {denial.message}")
        if uri.startswith("state://"):
            return await self.host.state(name, key, context.token)
        if uri.startswith("topology://"):
            return as_dict(topology)
        kind = "dead-letters" if uri.startswith("deadletters://") else "denied"
        return summary(await set_aside(self.host.client, kind))

    # -- prompts -----------------------------------------------------------------------

    async def list_prompts(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        await self._granted()
        return types.ListPromptsResult(prompts=listing())

    async def get_prompt(
        self, ctx: ServerRequestContext[Any], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        context = await self._granted()
        args = params.arguments or {}
        denial = await self.host.authorize(
            (observe(self.topology),), context, params.name, "mcp:prompts/get"
        )
        if denial is not None:
            raise MCPError(INVALID_PARAMS, f"{denial.reason}: {denial.message}")
        client = self.host.client
        if params.name == EXPLAIN_DENIAL:
            facts = await set_aside(client, "denied", since_s=7 * 24 * 3600)
            wanted = args.get("intent_id")
            chosen = [f for f in facts if not wanted or f.get("intent_id") == wanted]
            if wanted and not chosen:
                raise MCPError(INVALID_PARAMS, f"no denial of intent {wanted} in the last week")
            text = explain_denial(self.topology, chosen[-1] if chosen else None)
        elif params.name == SUMMARISE_DEAD_LETTERS:
            try:
                hours = float(args.get("hours") or 1)
            except ValueError:
                raise MCPError(INVALID_PARAMS, "hours must be a number") from None
            if not 0 < hours <= 24 * 7:
                raise MCPError(INVALID_PARAMS, "hours must be more than 0 and at most a week")
            digest = summary(await set_aside(client, "dead-letters", since_s=hours * 3600))
            text = summarise_dead_letters(self.topology, hours, digest)
        else:
            raise MCPError(INVALID_PARAMS, f"no prompt {params.name!r}")
        return types.GetPromptResult(
            messages=[
                types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))
            ]
        )

    # -- Streamable HTTP -----------------------------------------------------------------

    def http_routes(self, manager: StreamableHTTPSessionManager) -> list[Route]:
        """``/mcp`` behind the bearer-token check, for a Starlette app to include."""
        app: Any = RequireAuthMiddleware(StreamableHTTPASGIApp(manager), [], None)
        app = AuthContextMiddleware(app)
        app = AuthenticationMiddleware(app, backend=BearerAuthBackend(_Verifier(self)))
        return [Route(PATH, endpoint=app)]

    def session_manager(self, host: str) -> StreamableHTTPSessionManager:
        """The SDK's sessions for Streamable HTTP (run it while serving: :meth:`sessions`);
        on a loopback ``host`` with the SDK's DNS-rebinding protection."""
        security = None
        if host in ("127.0.0.1", "localhost", "::1"):
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
        return StreamableHTTPSessionManager(app=self.server, security_settings=security)


class _Verifier:
    """The SDK's ``TokenVerifier``: the app's guard on the bearer token alone."""

    def __init__(self, app: McpApp) -> None:
        self.app = app

    async def verify_token(self, token: str) -> AccessToken | None:
        return await self.app.verify(token)
