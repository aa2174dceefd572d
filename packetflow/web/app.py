"""The worker's HTTP application (Starlette): intents in, state and live feeds out, the
dashboard, health and the OpenAPI document. Built on a
:class:`~packetflow.engine.runtime.view.WorkerView` and a client of the worker's broker;
every way in is checked by the worker's own guard (:mod:`packetflow.web.auth`)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import httpx
import orjson
from pydantic import ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.tokens import (
    BAD_REPLY_TO,
    INSUFFICIENT,
    OUTSIDE_WINDOW,
    PRINCIPAL_MISMATCH,
    UNSIGNED_INTERNAL,
)
from packetflow.engine.client import AskTimeout, Client, RequestRefused
from packetflow.engine.runtime.metrics import MetricsRegistry
from packetflow.engine.runtime.tracing import descend
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.security.audit import Auditor
from packetflow.engine.security.guard import Denial
from packetflow.engine.topology import TopologyError
from packetflow.engine.transport import Transport
from packetflow.observability.endpoints import routes as observability_routes
from packetflow.web.auth import (
    UNAUTHENTICATED,
    Caller,
    caller,
    csrf_ok,
    problem,
    refusal,
)
from packetflow.web.dashboard import routes as dashboard_routes
from packetflow.web.live import SLOW, Hubs, Subscriber
from packetflow.web.openapi import document
from packetflow.web.routes import routes_of
from packetflow.web.state import json_response, state

DENIED = UNAUTHENTICATED | {
    INSUFFICIENT, OUTSIDE_WINDOW, PRINCIPAL_MISMATCH, UNSIGNED_INTERNAL, BAD_REPLY_TO
}  # fmt: skip
_WAIT = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
MAX_WAIT = 60.0


def parse_wait(raw: str | None) -> float | None:
    """``?wait=5s``, ``500ms`` or ``2`` (seconds): how long to wait for the reply."""
    if raw is None:
        return None
    match = _WAIT.match(raw.strip())
    if match is None:
        raise ValueError(f"wait={raw!r}: give seconds (5, 5s) or milliseconds (500ms)")
    value = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if not 0 < value <= MAX_WAIT:
        raise ValueError(f"wait must be more than 0 and at most {MAX_WAIT:g}s")
    return value


class WebApp:
    """The application of one worker (``app``: the ASGI app)."""

    def __init__(
        self, view: WorkerView, transport: Transport, *, extra_routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.view = view
        self.topology = view.topology
        self.client = Client(transport, self.topology)
        audit_topic = self.topology.audit_topic
        self.auditor = Auditor(
            self.topology.name,
            lambda value, key: self.client.send_raw(audit_topic, value, key=key),
        )
        self.http = httpx.AsyncClient(timeout=5.0)
        self.hubs = Hubs(transport, self.topology, view.metrics.registry)
        self.max_body = self.topology.max_record_bytes
        self.openapi = document(self.topology)
        self.app = Starlette(
            routes=[*self._routes(), *extra_routes],
            exception_handlers={HTTPException: self._http_error},  # type: ignore[dict-item]
            middleware=[Middleware(Counted, registry=view.metrics.registry)],
        )

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.hubs.stop()
        await self.http.aclose()
        await self.client.stop()

    def _routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/intents/{type}", self.intents, methods=["POST"]),
            Route("/state/{name}/{key:path}", self.state, methods=["GET"]),
            Route("/live/{topic}", self.live, methods=["GET"]),
            WebSocketRoute("/live/{topic}", self.live_ws),
            *observability_routes(self.view),  # /metrics and /health/*
            Route("/openapi.json", self.openapi_json, methods=["GET"]),
            *dashboard_routes(self),
        ]
        for declared in routes_of(self.topology):
            endpoint = partial(self._declared, declared.intent_type, tuple(declared.params))
            routes.append(Route(declared.path, endpoint, methods=["POST"]))
        return routes

    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        reasons = {404: "not-found", 405: "method-not-allowed"}
        return problem(exc.status_code, reasons.get(exc.status_code, "http"), str(exc.detail))

    async def authorize(
        self, required: tuple[tuple[str, str], ...], context: Context, what: str, source: str
    ) -> Denial | None:
        """The worker's guard on a request; a refusal is audited (``source``: where)."""
        denial = self.view.authorize(required, context, what)
        if denial is not None:
            claims = denial.claims
            await self.auditor.record(
                "denied", time.time(), reason=denial.reason, error=denial.message[:1000],
                intent_type=what, principal=context.principal,
                holder=claims.holder if claims else None,
                token_id=claims.token_id if claims else None,
                missing=list(denial.missing) or None, source=source,
            )  # fmt: skip
        return denial

    # -- intents in ------------------------------------------------------------------

    async def intents(self, request: Request) -> Response:
        name = request.path_params["type"]
        try:
            cls = self.topology.intent_type(name)
        except TopologyError:
            return problem(404, "unknown-type", f"{name!r} is not an intent type of "
                           f"{self.topology.name}")  # fmt: skip
        if cls.internal:
            return problem(404, "unknown-type", f"{name} is internal: only workers send it")
        return await self.publish(request, cls, {})

    async def _declared(
        self, cls: type[Intent], params: tuple[str, ...], request: Request
    ) -> Response:
        fields: dict[str, Any] = {
            k: v for k, v in request.query_params.items() if k in cls.model_fields
        }
        fields.update({p: request.path_params[p] for p in params})
        return await self.publish(request, cls, fields, body_optional=True)

    async def publish(
        self,
        request: Request,
        cls: type[Intent],
        fields: dict[str, Any],
        *,
        body_optional: bool = False,
    ) -> Response:
        """Validate, authorise and publish one intent (the same path for every route)."""
        who = caller(request)
        if who.by_cookie and not csrf_ok(request):
            return problem(403, "csrf", "a request with the session cookie needs its CSRF token "
                           "(the pf_csrf cookie, echoed in X-CSRF-Token)")  # fmt: skip
        try:
            wait = parse_wait(request.query_params.get("wait"))
        except ValueError as exc:
            return problem(400, "bad-wait", str(exc))
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if body.strip():
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                return problem(400, "bad-json", f"the body is not JSON: {exc}")
            if not isinstance(data, dict):
                return problem(400, "bad-json", "the body must be a JSON object of the fields")
        elif body_optional:
            data = {}
        else:
            return problem(400, "bad-json", "the body must be a JSON object of the fields")
        data.update(fields)
        try:
            intent = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return problem(400, "invalid", f"{cls.intent_type}: {where}: {first['msg']}",
                           errors=exc.errors(include_url=False, include_context=False))  # fmt: skip
        return await self._send(request, who, intent, wait)

    async def _body(self, request: Request) -> bytes | Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return problem(413, "too-large", f"the body is {declared} bytes, more than a "
                           f"record may be ({self.max_body})")  # fmt: skip
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return problem(413, "too-large", f"the body is more than {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _send(
        self, request: Request, who: Caller, intent: Intent, wait: float | None
    ) -> Response:
        cls = type(intent)
        context = who.context()
        denial = await self.authorize(
            intent.requirements(), context, cls.intent_type,
            f"http:{request.method} {request.url.path}",
        )  # fmt: skip
        if denial is not None:
            return refusal(denial, who)
        # what goes on is the token alone: the worker checks it again, as for any record
        sent = Context.new(context.principal if who.token else None, token=who.token)
        tracing = self.view.tracing
        if tracing is None:
            return await self._publish(intent, sent, wait)
        route = getattr(request.scope.get("route"), "path", request.url.path)
        attributes = {"http.request.method": request.method, "http.route": route,
                      "packetflow.intent_type": cls.intent_type}  # fmt: skip
        with tracing.entry(f"{request.method} {route}", attributes) as ids:
            return await self._publish(intent, descend(sent, ids), wait)

    async def _publish(self, intent: Intent, sent: Context, wait: float | None) -> Response:
        cls = type(intent)
        if wait is None:
            ack = await self.client.enqueue(intent, context=sent)
            # one turn of the loop first: requests handled in the same turn share a batch
            # (one produce request for all of them, not one each)
            await asyncio.sleep(0)
            delivery = await ack
            return JSONResponse(
                {"intent_id": sent.intent_id, "topic": self.topology.topic_for(cls),
                 "partition": delivery.partition, "offset": delivery.offset},
                status_code=202,
            )  # fmt: skip
        try:
            reply = await self.client.ask(intent, context=sent, timeout=wait)
        except RequestRefused as refused:
            status = 403 if refused.reason in DENIED else 422
            return problem(status, refused.reason, refused.error, intent_id=sent.intent_id)
        except AskTimeout as exc:
            return problem(504, "timeout", str(exc), intent_id=sent.intent_id)
        return json_response({"intent_id": sent.intent_id, "type": type(reply).intent_type,
                              "reply": reply.model_dump(mode="json")})  # fmt: skip

    # -- state, live, health -----------------------------------------------------------

    async def state(self, request: Request) -> Response:
        return await state(request, self.view, self.http, self.authorize)

    async def _subscribe(
        self, who: Caller, topic: str, last_event_id: str | None, source: str
    ) -> Subscriber | Response:
        topology = self.topology
        if topic not in topology.topics or topic in topology.internal_topics():
            return problem(404, "unknown-topic", f"{topic!r} is not a topic of {topology.name} "
                           "that may be followed")  # fmt: skip
        if who.token is None:
            return problem(401, "no-token", "a live feed needs a token: its records are "
                           "filtered by what it may read")  # fmt: skip
        context = who.context()
        denial = await self.authorize((), context, f"live {topic}", source)
        if denial is not None:
            return refusal(denial, who)
        grants = topology.hierarchy.compile(context.capabilities)
        hub = await self.hubs.hub(topic)
        return hub.subscribe(grants, last_event_id)

    async def live(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        sub = await self._subscribe(
            caller(request), topic, request.headers.get("last-event-id"),
            f"http:GET {request.url.path}",
        )  # fmt: skip
        if isinstance(sub, Response):
            return sub
        hub = await self.hubs.hub(topic)

        async def events() -> AsyncIterator[dict[str, str]]:
            try:
                while True:
                    event = await sub.queue.get()
                    if event is None:
                        yield {"event": "close", "data": sub.dropped or "closed"}
                        return
                    yield {"id": event.id, "event": "intent", "data": event.data.decode()}
            finally:
                hub.leave(sub)

        return EventSourceResponse(events(), ping=15)

    async def live_ws(self, websocket: WebSocket) -> None:
        """The token comes in the first message (``{"token": ...}``; a browser's WebSocket
        cannot send headers) or the session cookie; then each event is a text frame."""
        await websocket.accept()
        topic = websocket.path_params["topic"]
        who = caller(websocket)
        last = None
        try:
            first = orjson.loads(await asyncio.wait_for(websocket.receive_text(), 10.0))
            if isinstance(first, dict):
                if isinstance(first.get("token"), str):
                    who = Caller(first["token"])
                last = first.get("last_event_id")
        except (TimeoutError, orjson.JSONDecodeError, WebSocketDisconnect):
            await websocket.close(1008, "send {\"token\": ...} first")
            return
        sub = await self._subscribe(who, topic, last, f"ws:{websocket.url.path}")
        if isinstance(sub, Response):
            await websocket.close(1008, orjson.loads(bytes(sub.body)).get("reason", "refused"))
            return
        hub = await self.hubs.hub(topic)
        try:
            while True:
                event = await sub.queue.get()
                if event is None:
                    await websocket.close(1013 if sub.dropped == SLOW else 1001,
                                          sub.dropped or "closed")  # fmt: skip
                    return
                await websocket.send_text(event.data.decode())
        except WebSocketDisconnect:
            pass
        finally:
            hub.leave(sub)

    async def openapi_json(self, request: Request) -> Response:
        return JSONResponse(self.openapi)

    # -- for the dashboard --------------------------------------------------------------

    async def observer(
        self, who: Caller, source: str
    ) -> tuple[Context, None] | tuple[None, Response]:
        """The context of a caller that may observe the topology, or the refusal."""
        context = who.context()
        required = (("observe", f"topology/{self.topology.name}"),)
        denial = await self.authorize(required, context, "dashboard", source)
        if denial is not None:
            return None, refusal(denial, who)
        return context, None

    async def metrics(self) -> dict[str, Any]:
        view = self.view
        return {
            "at": time.time(),
            "worker": view.instance_id,
            "reactors": await view.stream_metrics(),
            "worker_metrics": {
                k: v for k, v in view.metrics.snapshot().items()
                if k in ("consumed", "batches", "dead_lettered", "denied_reasons", "commits")
            },
            # what substrates register (windows open, actors active, schedule firings, ...)
            "substrates": view.metrics.registry.snapshot(),
            "subscribers": self.hubs.subscribers,
            "members": len(view.members()),
        }  # fmt: skip


class Counted:
    """ASGI middleware: each HTTP request counted by its route's path and its status, in
    the worker's metrics registry (``packetflow_http_requests_total``)."""

    def __init__(self, app: ASGIApp, registry: MetricsRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.registry.counter(
                "packetflow_http_requests_total", "HTTP requests, by route and status",
                "http_requests", route=route, status=str(status),
            ).inc()  # fmt: skip
