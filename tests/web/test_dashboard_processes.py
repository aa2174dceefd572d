"""The dashboard's processes page (``/processes``): the instances of the topology's sagas
this worker holds, with their status, current steps and history; the same observer check
and login redirect as ``/``; everything escaped, no token rendered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from support.running import WAIT, Running, running, unique
from support.sagas import GRANTS, OUTCOMES, Book, travel
from support.webshop import KEY, SECRET, bearer, served

from packetflow import Context, Security, issue_token
from packetflow.web import HttpService

ODD = '<b>x&"'  # a trip id that must come out escaped (no "/": trip/* covers it)


@dataclass
class Trips:
    run: Running
    http: httpx.AsyncClient
    service: HttpService
    observer: str  # a token with observe:topology/<name> and read:trip/*
    booker: str  # one without
    watcher: str  # observe:topology/<name> alone: sees the dashboard, not the trips


@asynccontextmanager
async def trips(broker: str) -> AsyncIterator[Trips]:
    """A travel topology (its saga waits for a confirmation) served over HTTP, with one
    trip waiting (``t1``), one with an odd id waiting and one compensated (``f1``)."""
    topology, _ = travel(name=unique("travel"), hold=0, timeout=3.0,
                         security=Security(trusted_keys=[KEY], worker_secret=SECRET))  # fmt: skip
    booker = issue_token("ann", GRANTS, key=KEY, ttl=3600)
    observer = issue_token("olga", [f"observe:topology/{topology.name}", "read:trip/*"],
                           key=KEY, ttl=3600)  # fmt: skip
    watcher = issue_token("walt", [f"observe:topology/{topology.name}"], key=KEY, ttl=3600)
    service = HttpService("127.0.0.1:0")
    async with running(topology, broker, services=[service]) as run:
        as_ann = Context.new(token=booker)
        for trip in ("t1", ODD):
            await run.client.send(Book(trip=trip), context=as_ann)
        await run.client.send(Book(trip="f1", modes={"flight": "raise"}), context=as_ann)
        await run.client.wait_for(OUTCOMES, 1, timeout=WAIT)  # f1's
        for _ in range(int(WAIT / 0.05)):
            await run.idle()
            if all("step:confirm" in (run.state("trip", t) or {}).get("pending", {})
                   for t in ("t1", ODD)):  # fmt: skip
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=service.url, timeout=20.0) as http:
            yield Trips(run, http, service, observer, booker, watcher)


async def test_the_processes_page_lists_this_workers_instances() -> None:
    async with trips("memory://processes") as t:
        index = await t.http.get("/", headers=bearer(t.observer))
        assert index.status_code == 200 and 'href="/processes"' in index.text
        page = await t.http.get("/processes", headers=bearer(t.observer))
        assert page.status_code == 200, page.text
        html = page.text
        assert "Only the instances on this worker" in html
        row = html[html.index('data-id="t1"') :].split("</tr>")[0]
        assert 'class="status st-running">running<' in row
        assert 'class="current">step:confirm<' in row
        failed = html[html.index('data-id="f1"') :].split("</tr>")[0]
        assert ">compensated<" in failed and 'class="current">-<' in failed
        # escaped: the odd id as text, never as markup; no token anywhere
        assert 'data-id="&lt;b&gt;x&amp;&#34;"' in html and "<b>x" not in html
        odd = html[html.index('data-id="&lt;b&gt;') :].split("</tr>")[0]
        assert 'href="/processes/trip/%3Cb%3Ex%26%22"' in odd and "step:confirm" in odd
        assert t.observer not in html and t.booker not in html

        detail = await t.http.get("/processes/trip/t1", headers=bearer(t.observer))
        assert detail.status_code == 200
        assert ">step:confirm<" in detail.text and ">ann<" in detail.text
        history = detail.text[detail.text.index('id="history"') :]
        assert ">started<" in history and ">step-started<" in history
        odd_page = await t.http.get("/processes/trip/%3Cb%3Ex%26%22", headers=bearer(t.observer))
        assert odd_page.status_code == 200 and "<b>x" not in odd_page.text
        assert "&lt;b&gt;x&amp;&#34;" in odd_page.text and ">step:confirm<" in odd_page.text
        gone = await t.http.get("/processes/trip/nope", headers=bearer(t.observer))
        assert gone.status_code == 404 and "Not on this worker" in gone.text


async def test_the_processes_page_needs_observe_like_the_dashboard() -> None:
    async with trips("memory://processes-refused") as t:
        for path in ("/processes", "/processes/trip/t1"):
            browser = await t.http.get(path, headers={"accept": "text/html"})
            assert (browser.status_code, browser.headers["location"]) == (303, "/login")
            assert (await t.http.get(path)).status_code == 401
            other = await t.http.get(path, headers=bearer(t.booker))
            assert (other.status_code, other.json()["reason"]) == (403, "insufficient")
            assert "t1" not in other.text
        cookie = {"pf_session": t.observer}  # a browser's, after logging in
        t.http.cookies.update(cookie)
        assert (await t.http.get("/processes")).status_code == 200


async def test_a_topology_without_sagas_has_no_processes_link() -> None:
    async with served("memory://processes-none") as s:
        name = s.run.topology.name
        viewer = issue_token("vera", [f"observe:topology/{name}"], key=KEY, ttl=3600)
        index = await s.http.get("/", headers=bearer(viewer))
        assert index.status_code == 200 and "/processes" not in index.text
        page = await s.http.get("/processes", headers=bearer(viewer))
        assert page.status_code == 200 and "No instance on this worker" in page.text


async def test_observing_the_topology_is_not_reading_its_trips() -> None:
    async with trips("memory://processes-read") as t:
        listed = await t.http.get("/processes", headers=bearer(t.watcher))
        assert listed.status_code == 200
        assert "t1" not in listed.text and "f1" not in listed.text
        detail = await t.http.get("/processes/trip/t1", headers=bearer(t.watcher))
        assert detail.status_code == 403 and "read:" in detail.text
        assert "ann" not in detail.text  # nothing of the instance
