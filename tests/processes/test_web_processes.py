"""Two worker processes on Kafka serving HTTP: a state query asked of either is answered by
the worker that owns the key (forwarded once, never twice), and while ownership moves the
answer is 503 with Retry-After, never a wrong value."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from support.workerproc import WORKER_KEY, WorkerProcess, new_namespace, orders_topology

from packetflow import Client, Context, issue_token
from topologies.orders import Deposit

TELLER = issue_token("teller", ["teller:account/*"], key=WORKER_KEY, ttl=3600)
AUDITOR = issue_token("auditor", ["read:account/*"], key=WORKER_KEY, ttl=3600)
ACCOUNTS = [f"acct-{i}" for i in range(12)]


async def _url(worker: WorkerProcess) -> str:
    found = await worker.wait_log(r"serving HTTP on (http://127\.0\.0\.1:\d+)", timeout=60)
    return found.group(1)


async def _until(check: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # type: ignore[misc]
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout:g}s") from None


async def test_state_queries_reach_the_owner_through_either_worker(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    ns = new_namespace()
    a = spawn("web-a", ns, module="topologies.orders", args=["--http", "127.0.0.1:0"])
    a_url = await _url(a)
    await a.wait_log(r"assigned .*accounts\[", timeout=60)
    b = spawn("web-b", ns, module="topologies.orders", args=["--http", "127.0.0.1:0"])
    b_url = await _url(b)
    await b.wait_log(r"assigned .*accounts\[", timeout=60)
    topology = orders_topology(ns)
    async with Client(kafka_url, topology) as client:
        for i, account in enumerate(ACCOUNTS):
            await client.send(Deposit(account=account, amount=10 + i),
                              context=Context.new(token=TELLER))  # fmt: skip
    headers = {"Authorization": f"Bearer {AUDITOR}"}
    async with httpx.AsyncClient(timeout=10.0) as http:

        async def all_answered() -> bool:
            for url in (a_url, b_url):
                for i, account in enumerate(ACCOUNTS):
                    got = await http.get(f"{url}/state/accounts/{account}", headers=headers)
                    if got.status_code == 503:
                        assert got.headers["retry-after"] == "1"
                        return False  # ownership still moving, or not yet announced
                    assert got.status_code == 200, got.text
                    if (got.json()["value"] or {}).get("balance") != 10 + i:
                        return False  # not yet processed
            return True

        await _until(all_answered, "every balance from both workers")
        ids = {await _instance(http, a_url): a_url, await _instance(http, b_url): b_url}
        owners = set()
        for account in ACCOUNTS:
            owner = (await http.get(f"{a_url}/state/accounts/{account}", headers=headers)).json()
            owners.add(owner["worker"])
            # the other worker, asked with the request marked as forwarded, does not forward
            other = next(url for worker, url in ids.items() if worker != owner["worker"])
            hop = await http.get(f"{other}/state/accounts/{account}",
                                 headers={**headers, "x-packetflow-hops": "1"})  # fmt: skip
            assert hop.status_code == 503 and "not this worker's" in hop.json()["error"]
        assert owners == set(ids)  # both own some accounts: half of a's answers came from b

        # b leaves: its accounts move to a; meanwhile 503 or the right value, never wrong
        stopping = asyncio.create_task(b.terminate())
        await _until(all_answered_on(http, a_url, headers), "every balance from a alone")
        await stopping


async def _instance(http: httpx.AsyncClient, url: str) -> str:
    return str((await http.get(f"{url}/health/live")).json()["worker"])


def all_answered_on(
    http: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> Callable[[], object]:
    async def check() -> bool:
        for i, account in enumerate(ACCOUNTS):
            got = await http.get(f"{url}/state/accounts/{account}", headers=headers)
            if got.status_code == 503:
                return False
            assert got.status_code == 200, got.text
            assert got.json()["value"]["balance"] == 10 + i  # restored, never a wrong value
        return True

    return check
