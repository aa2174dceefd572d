"""The dashboard in a real browser: Playwright driving Debian's Chromium (``make test``
installs it; no browser download) against a worker this test starts. Logging in with a
token, the topology graph, a live counter that moves as intents arrive, and the intent form
(adapted to the token) sending one, and showing the refusal for a token that may not; the
processes page of a topology with a saga. Screenshots go to ``artifacts/browser/``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from support.running import WAIT, running, unique
from support.sagas import GRANTS, Book, travel
from support.webshop import KEY, SECRET, bearer, served

from packetflow import Context, Security, issue_token
from packetflow.web import HttpService

CHROMIUM = os.environ.get("PACKETFLOW_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
# Chromium as the machine allows it: no sandbox as root, nothing reaching out to the network
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run 'make browser' (apt-get install chromium)")
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def login(page: Page, url: str, token: str) -> None:
    await page.goto(url + "/")
    await expect(page).to_have_url(url + "/login")
    await page.fill("input[name=token]", token)
    await page.click("button[type=submit]")


async def test_the_dashboard_shows_the_topology_live_and_sends_intents(browser: Browser) -> None:
    async with served("memory://browser") as s:
        name = s.run.topology.name
        operator = issue_token("olga", [f"observe:topology/{name}", "order:customer/alice"],
                               key=KEY, ttl=3600)  # fmt: skip
        page = await browser.new_page()
        await login(page, s.service.url, operator)
        await expect(page).to_have_url(s.service.url + "/")
        await expect(page.locator("g[data-node=orders]")).to_be_visible()
        await expect(page.locator("g[data-node=jobs]")).to_be_visible()
        assert operator not in await page.content()  # the token is never rendered
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["pf_session"]["httpOnly"] is True

        # a live counter: intents sent from outside show up within a refresh or two
        processed = page.locator("tr[data-name=orders] .processed")
        await expect(processed).to_have_text("0")
        for item in ("tea", "cake", "jam"):
            response = await s.http.post("/intents/shop.Order", headers=bearer(operator),
                                         json={"customer": "alice", "item": item})  # fmt: skip
            assert response.status_code == 202
        await expect(processed).to_have_text("3", timeout=10_000)

        # the form: the customer field offers what the token holds; it sends with the cookie
        form = page.locator("form.intent[data-type='shop.Order']")
        assert await form.locator("select[name=customer] option").all_inner_texts() == ["alice"]
        await form.locator("input[name=item]").fill("scones")
        await form.locator("button[type=submit]").click()
        await expect(form.locator(".result")).to_contain_text("202")
        await expect(processed).to_have_text("4", timeout=10_000)
        await shot(page, "dashboard")
        await page.close()


async def test_the_form_shows_the_refusal_for_a_token_that_may_not(browser: Browser) -> None:
    async with served("memory://browser-refusal") as s:
        name = s.run.topology.name
        viewer = issue_token("vera", [f"observe:topology/{name}"], key=KEY, ttl=3600)
        page = await browser.new_page()
        await login(page, s.service.url, viewer)
        form = page.locator("form.intent[data-type='shop.Order']")
        await expect(form.locator(".refused")).to_contain_text("no order: grant")
        await form.locator("input[name=customer]").fill("bob")
        await form.locator("input[name=item]").fill("tea")
        await form.locator("button[type=submit]").click()
        result = form.locator(".result")
        await expect(result).to_contain_text("403")
        await expect(result).to_contain_text("insufficient")
        await shot(page, "refusal")
        assert await s.run.read(s.run.topology.reactors["orders"].topic) == []

        # a token that may not observe the topology does not get past the login
        await page.context.clear_cookies()
        outsider = issue_token("otto", ["order:customer/otto"], key=KEY, ttl=3600)
        await login(page, s.service.url, outsider)
        await expect(page.locator("[role=alert]")).to_contain_text("insufficient")
        await page.close()


async def test_the_processes_page_shows_a_running_instances_step(browser: Browser) -> None:
    topology, _ = travel(name=unique("travel"), hold=0,
                         security=Security(trusted_keys=[KEY], worker_secret=SECRET))  # fmt: skip
    service = HttpService("127.0.0.1:0")
    async with running(topology, "memory://browser-processes", services=[service]) as run:
        ann = issue_token("ann", GRANTS, key=KEY, ttl=3600)
        await run.client.send(Book(trip="t1"), context=Context.new(token=ann))
        for _ in range(int(WAIT / 0.05)):  # until it waits for the traveller's confirmation
            await run.idle()
            if "step:confirm" in (run.state("trip", "t1") or {}).get("pending", {}):
                break
            await asyncio.sleep(0.05)
        operator = issue_token("olga", [f"observe:topology/{topology.name}", "read:trip/*"],
                               key=KEY, ttl=3600)  # fmt: skip
        page = await browser.new_page()
        await login(page, service.url, operator)
        await page.click("header a[href='/processes']")
        await expect(page).to_have_url(service.url + "/processes")
        await expect(page.locator("#scope")).to_contain_text("on this worker")
        row = page.locator("tr[data-id=t1]")
        await expect(row.locator(".status")).to_have_text("running")
        await expect(row.locator(".current")).to_have_text("step:confirm")
        await shot(page, "processes")
        await row.locator("a").click()
        await expect(page.locator("#process .current")).to_have_text("step:confirm")
        await expect(page.locator("#history")).to_contain_text("step-started")
        assert operator not in await page.content()
        await page.close()
