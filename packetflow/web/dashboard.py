"""The dashboard at ``/``: server-rendered pages (jinja2, no build step), live over SSE.

It shows the topology as an SVG graph, per reactor and agent its throughput, latency, lag,
dead letters and denials (``/dashboard/events``, every second), and a form per intent type
made from its JSON schema that sends through the same bearer-token path as any client;
its fields adapt to the token (a field that names the resource a requirement is about
offers the resources the token holds). ``/processes`` lists the instances of the
topology's sagas (agents of kind ``saga``) this worker holds, read through the worker view.
Reading it needs ``observe:topology/<name>``; a browser logs in with a token once
(``/login``), kept in an HttpOnly cookie, never shown.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from typing import Any, Protocol

import orjson
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from packetflow.core.capability import Capability
from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.engine.runtime.lookup import read_requirement
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.topology import Topology
from packetflow.web.auth import CSRF_COOKIE, SESSION_COOKIE, Caller, caller, csrf_ok, new_csrf
from packetflow.web.openapi import accepted


class Site(Protocol):
    """What the dashboard needs of the application (``WebApp``)."""

    view: WorkerView
    topology: Topology

    async def observer(
        self, who: Caller, source: str
    ) -> tuple[Context, None] | tuple[None, Response]: ...

    async def metrics(self) -> dict[str, Any]: ...

_env = Environment(loader=PackageLoader("packetflow.web", "templates"),
                   autoescape=select_autoescape(["html"]))  # fmt: skip
_SLOT = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)}")


@dataclass
class FormField:
    name: str
    kind: str  # text | number | integer | checkbox | json
    required: bool
    choices: list[str] = field(default_factory=list)  # what the token holds, when it is narrow


@dataclass
class Form:
    type: str
    title: str
    needs: list[str]
    fields: list[FormField]
    refused: str | None  # why this token cannot send it at all (None: it may try)


def forms(topology: Topology, grants: tuple[Capability, ...]) -> list[Form]:
    """A form per intent type accepted from outside, adapted to ``grants``."""
    return [_form(cls, grants) for cls in accepted(topology)]


def _form(cls: type[Intent], grants: tuple[Capability, ...]) -> Form:
    schema = cls.model_json_schema()
    required = set(schema.get("required", []))
    props: dict[str, Any] = schema.get("properties", {})
    needs = [f"{c.operation}:{c.resource}" for c in cls.required_capabilities]
    refused = None
    choices: dict[str, list[str]] = {}
    for cap in cls.required_capabilities:
        held = [g for g in grants if g.operation in (cap.operation, "*")]
        if not held:
            refused = f"this token holds no {cap.operation}: grant"
            continue
        slot = _SLOT.search(cap.resource)
        if slot is None:
            continue
        prefix, suffix = cap.resource[: slot.start()], cap.resource[slot.end() :]
        values: list[str] = []
        for g in held:
            r = g.resource
            if "*" in r or not (r.startswith(prefix) and r.endswith(suffix)):
                values = []  # a pattern: any value may do
                break
            values.append(r[len(prefix) : len(r) - len(suffix)] if suffix else r[len(prefix) :])
        if values:
            choices[slot.group(1)] = sorted(set(values))
    fields = []
    for name, prop in props.items():
        kind = {"integer": "integer", "number": "number", "boolean": "checkbox",
                "string": "text"}.get(prop.get("type", ""), "json")  # fmt: skip
        fields.append(FormField(name, kind, name in required, choices.get(name, [])))
    title = (cls.__doc__ or cls.__name__).strip().split("\n")[0]
    return Form(cls.intent_type, title, needs, fields, refused)


PROCESSES = 1000  # instances listed at most on the page


@dataclass
class Process:
    """A saga instance as this worker holds it (what ``view.inspect`` returns, read
    generically)."""

    saga: str
    id: str
    status: str
    current: list[str]
    started: str
    updated: str
    ended: str
    by: str
    start: str
    data: str
    failure: dict[str, Any] | None
    timers: dict[str, str]
    history: list[dict[str, str]]


def sagas(topology: Topology) -> list[str]:
    """The names of the topology's sagas: its agents of kind ``saga``."""
    return sorted(s.name for s in topology.consumers() if getattr(s, "kind", "") == "saga")


def _when(ms: Any) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-" if ms is None else str(ms)
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _entry(entry: Any) -> dict[str, str]:
    if isinstance(entry, list | tuple):
        entry = dict(zip(("at", "event", "step", "reason", "detail"), entry, strict=False))
    if not isinstance(entry, dict):
        return {"at": "-", "event": str(entry), "step": "", "reason": "", "detail": ""}
    return {"at": _when(entry.get("at")), "event": str(entry.get("event") or "?"),
            **{k: str(entry.get(k) or "") for k in ("step", "reason", "detail")}}  # fmt: skip


def process(saga: str, key: str, raw: Any) -> Process | None:
    """One instance from what its agent's ``inspect`` returned (None: not an instance)."""
    if not isinstance(raw, dict):
        return None
    start = raw.get("start")
    if not isinstance(start, dict):
        start = {}
    failure = raw.get("failure")
    return Process(
        saga=saga,
        id=str(raw.get("id") or key),
        status=str(raw.get("status") or "?"),
        current=[str(slot) for slot in raw.get("pending") or {}],
        started=_when(raw.get("started")),
        updated=_when(raw.get("updated")),
        ended=_when(raw.get("ended")),
        by=str(raw.get("by") or "-"),
        start=str(start.get("type") or "-"),
        data=orjson.dumps(start.get("data"), option=orjson.OPT_INDENT_2).decode(),
        failure=failure if isinstance(failure, dict) else None,
        timers={str(k): str(v) for k, v in (raw.get("timers") or {}).items()},
        history=[_entry(e) for e in raw.get("history") or []],
    )


def may_read(view: WorkerView, context: Context, name: str, key: str) -> bool:
    """``context`` may read ``key``'s instance of ``name`` (``read:`` on its start intent's
    resource, as ``GET /state``): observing the topology is not reading its data."""
    need = read_requirement(view.topology, name, key)
    return view.authorize((need,), context, f"state {name}") is None


def processes(
    view: WorkerView, context: Context, saga: str | None = None
) -> list[Process]:
    """The instances of the topology's sagas (or of ``saga``) held by this worker that
    ``context`` may read."""
    out: list[Process] = []
    for name in sagas(view.topology):
        if saga is not None and name != saga:
            continue
        for key in sorted(k for k in view.states(name) if k is not None):
            if not may_read(view, context, name, key):
                continue
            found = process(name, key, view.inspect(name, key))
            if found is not None:
                out.append(found)
    return out


def graph_svg(topology: Topology) -> Markup:
    """Topics on the left, reactors and agents on the right: consumes (solid) and emits
    (dashed) edges. Plain SVG, made here."""
    internal = topology.internal_topics()
    topics = [i.name for i in topology.topic_infos() if i.name not in internal]
    order = {t: i for i, t in enumerate(topics)}
    consumers = sorted(
        ((s.name, getattr(s, "kind", "reactor"), s.topic) for s in topology.consumers()),
        key=lambda c: order.get(c[2], len(order)),
    )  # beside the topic each consumes: fewer crossing edges
    row, width = 46, 720
    height = max(len(topics), len(consumers), 1) * row + 20
    tx, cx, bw, bh = 20, 430, 250, 30
    ty = {t: 10 + i * row for i, t in enumerate(topics)}
    cy = {c[0]: 10 + i * row for i, c in enumerate(consumers)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="0 0 {width} '
             f'{height}" width="{width}" height="{height}" role="img" aria-label="topology '
             f'graph">']  # fmt: skip
    for name, _, topic in consumers:
        if topic in ty:
            parts.append(f'<line class="consumes" x1="{tx + bw}" y1="{ty[topic] + bh / 2}" '
                         f'x2="{cx}" y2="{cy[name] + bh / 2}"/>')  # fmt: skip
        for out in topology.emits(name):
            if out in ty:
                parts.append(f'<line class="emits" x1="{cx}" y1="{cy[name] + bh / 2 + 6}" '
                             f'x2="{tx + bw}" y2="{ty[out] + bh / 2 + 6}"/>')  # fmt: skip
    for t, y in ty.items():
        parts.append(f'<g class="topic" data-topic="{escape(t)}"><rect x="{tx}" y="{y}" '
                     f'width="{bw}" height="{bh}" rx="4"/><text x="{tx + 8}" y="{y + 20}">'
                     f"{escape(t)}</text></g>")  # fmt: skip
    for name, kind, _ in consumers:
        y = cy[name]
        parts.append(f'<g class="node {escape(kind)}" data-node="{escape(name)}"><rect x="{cx}" '
                     f'y="{y}" width="{bw}" height="{bh}" rx="12"/><text x="{cx + 10}" '
                     f'y="{y + 20}">{escape(name)} · {escape(kind)}</text></g>')  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))


def routes(web: Site) -> list[BaseRoute]:
    async def observe(request: Request, source: str) -> Context | Response:
        context, refused = await web.observer(caller(request), source)
        if context is None:
            if "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/login", status_code=303)
            assert refused is not None
            return refused
        return context

    async def index(request: Request) -> Response:
        context = await observe(request, "http:GET /")
        if isinstance(context, Response):
            return context
        topology = web.topology
        page = _env.get_template("index.html").render(
            topology=topology,
            worker=web.view.instance_id,
            principal=context.principal,
            graph=graph_svg(topology),
            consumers=[(s.name, getattr(s, "kind", "reactor")) for s in topology.consumers()],
            forms=forms(topology, context.capabilities),
            sagas=sagas(topology),
        )
        return HTMLResponse(page)

    async def process_list(request: Request) -> Response:
        context = await observe(request, "http:GET /processes")
        if isinstance(context, Response):
            return context
        found = processes(web.view, context)
        page = _env.get_template("processes.html").render(
            topology=web.topology,
            worker=web.view.instance_id,
            principal=context.principal,
            sagas=sagas(web.topology),
            processes=found[:PROCESSES],
            more=max(0, len(found) - PROCESSES),
        )
        return HTMLResponse(page)

    async def process_detail(request: Request) -> Response:
        context = await observe(request, "http:GET /processes/{saga}/{id}")
        if isinstance(context, Response):
            return context
        saga, key = request.path_params["saga"], request.path_params["id"]
        found = None
        if saga in sagas(web.topology):
            if not may_read(web.view, context, saga, key):
                return HTMLResponse(
                    f"{escape(context.principal or 'anonymous')} may not read {escape(saga)}"
                    f" {escape(key)} (needs read: on its resource)", status_code=403
                )
            found = process(saga, key, web.view.inspect(saga, key))
        page = _env.get_template("process.html").render(
            topology=web.topology,
            worker=web.view.instance_id,
            principal=context.principal,
            saga=saga,
            key=key,
            p=found,
        )
        return HTMLResponse(page, status_code=200 if found is not None else 404)

    async def login_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
        page = _env.get_template("login.html").render(
            topology=web.topology, csrf=csrf, error=error
        )
        response = HTMLResponse(page, status_code=status)
        response.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict")
        return response

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return await login_page(request)
        form = await request.form()
        token = str(form.get("token") or "").strip()
        csrf = form.get("csrf")
        if not csrf_ok(request, csrf if isinstance(csrf, str) else None):
            return await login_page(request, "the form expired: try again", 403)
        if not token:
            return await login_page(request, "give a token", 401)
        context, refused = await web.observer(Caller(token), "http:POST /login")
        if context is None:
            assert refused is not None
            why = orjson.loads(bytes(refused.body))
            return await login_page(request, f"{why['reason']}: {why['error']}",
                                    refused.status_code)  # fmt: skip
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict")
        response.set_cookie(CSRF_COOKIE, new_csrf(), httponly=False, samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        if not csrf_ok(request, (await request.form()).get("csrf")):  # type: ignore[arg-type]
            return HTMLResponse("the form expired", status_code=403)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def events(request: Request) -> Response:
        context, refused = await web.observer(caller(request), "http:GET /dashboard/events")
        if context is None:
            assert refused is not None
            return refused

        async def stream() -> AsyncIterator[dict[str, str]]:
            while True:
                yield {"event": "metrics", "data": orjson.dumps(await web.metrics()).decode()}
                await asyncio.sleep(1.0)

        return EventSourceResponse(stream(), ping=15)

    return [
        Route("/", index, methods=["GET"]),
        Route("/processes", process_list, methods=["GET"]),
        Route("/processes/{saga}/{id:path}", process_detail, methods=["GET"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dashboard/events", events, methods=["GET"]),
    ]
