"""``packetflow tail``, ``set-aside`` and ``replay`` as an operator runs them, on the orders
example with a worker process on real Kafka: what the README's "Operating" section shows.
(The same operations through ``Client`` on both transports: tests/behaviour/test_operate.py.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from support.tokens import forge
from support.workerproc import WORKER_KEY, cli, new_namespace, orders_topology, wait_records

from packetflow import Client, Context, issue_token
from packetflow.engine.codec import TYPE_HEADER
from topologies import orders

MODULE = "topologies.orders"


def _ok(*args: str, ns: str) -> str:
    result = cli(*args, namespace=ns)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.kafka
async def test_an_operator_sees_what_was_set_aside_and_replays_it(
    kafka_url: str, spawn: Any
) -> None:
    ns = new_namespace()
    topology = orders_topology(ns)
    teller = issue_token("teller-1", ["teller:account/*"], key=WORKER_KEY, ttl="1h")
    expired = forge(WORKER_KEY, None, "teller-1", ["teller:account/*"], exp=int(time.time()) - 60)
    worker = spawn("worker", ns)
    async with Client(kafka_url, topology) as client:
        await client.send(
            orders.Deposit(account="acct-1", amount=5),
            context=Context.new("teller-1", token=teller),
        )
        await client.send(
            orders.Deposit(account="acct-1", amount=7),
            context=Context.new("teller-1", token=expired),
        )
        await client.send_raw(
            "accounts", b"\x1b[2J not json", key=b"acct-1",
            headers=[(TYPE_HEADER, b"orders.Deposit")],
        )
        await wait_records(client, "ledger", 1, [worker])
        await wait_records(client, topology.denied_topic, 1, [worker])
        await wait_records(client, topology.dead_letter_topic, 1, [worker])

    where = ("-b", kafka_url)
    shown = _ok("tail", MODULE, "accounts", "--format", "json", *where, ns=ns)
    records = [json.loads(line) for line in shown.splitlines()]
    assert [r.get("intent") for r in records] == [
        {"account": "acct-1", "amount": 5}, {"account": "acct-1", "amount": 7}, None,
    ]
    first = records[0]
    assert (first["type"], first["key"], first["principal"]) == (
        "orders.Deposit", "acct-1", "teller-1"
    )
    assert first["token"]["holder"] == "teller-1"
    assert first["token"]["grants"] == ["teller:account/*"]
    assert teller not in shown and expired not in shown  # token values are never printed
    assert records[2]["value"] == "\\x1b[2J not json"

    dead = _ok("tail", MODULE, "dead-letters", *where, ns=ns)
    assert "set aside: reason=decode source=" in dead and "\x1b" not in dead

    summary = _ok("set-aside", MODULE, "--format", "json", *where, ns=ns)
    rows = {(r["topic"], r["reason"]): r["count"] for r in map(json.loads, summary.splitlines())}
    assert rows == {("denied", "expired"): 1, ("dead-letters", "decode"): 1}
    assert "expired" in _ok("set-aside", MODULE, "--topic", "denied", *where, ns=ns)

    dry = _ok("replay", MODULE, "--from", "denied", "--dry-run", *where, ns=ns)
    assert "would replay 1 of 1 matching record(s) from denied" in dry
    assert '{"account":"acct-1","amount":7}' in dry and "reason=expired" in dry  # what it is
    assert expired not in dry
    operator = issue_token("ops-1", ["teller:account/*"], key=WORKER_KEY, ttl="1h")
    vouched = ("--reason", "expired", "--token", operator)
    done = _ok("replay", MODULE, "--from", "denied", *vouched, *where, ns=ns)
    assert "replayed 1 of 1 matching record(s) from denied" in done

    async with Client(kafka_url, topology) as client:
        ledger = await wait_records(client, "ledger", 2, [worker])
        assert sorted(r.intent.balance for r in ledger) == [5, 12]  # type: ignore[union-attr]
        replays = [e for e in await client.read_audit() if e["event"] == "replayed"]
        assert [(e["by"], e["reason"]) for e in replays] == [("ops-1", "expired")]

    again = _ok("replay", MODULE, "--from", "denied", *vouched, *where, ns=ns)
    assert "replayed 0 of 1" in again and "skipped 1: already-replayed" in again
    await worker.terminate()
