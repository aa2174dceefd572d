"""``packetflow schedule`` against a worker process on Kafka: add, list, show (next times in
the schedule's zone and UTC), pause, trigger, resume and cancel, with a signed token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from support.workerproc import (
    WORKER_KEY,
    WorkerProcess,
    cli,
    new_namespace,
    topology_in,
    wait_records,
)

from packetflow import Client, issue_token
from topologies import billing

pytestmark = pytest.mark.kafka

SERVICE = issue_token("billing-svc", ["billing:**"], key=WORKER_KEY, ttl="1d")



async def test_operate_a_schedule_from_the_command_line(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    ns = new_namespace()
    worker = spawn("sched-1", ns, module="topologies.billing")
    await worker.wait_log(r"assigned .*schedules\[", timeout=60)

    def run(*args: str) -> str:
        result = cli("schedule", *args, "--broker", kafka_url, namespace=ns)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def operate(op: str, *more: str) -> None:
        run(op, "topologies.billing", "inv-c9", "--token", SERVICE, *more)

    await asyncio.to_thread(
        run, "add", "topologies.billing", "billing.Invoice", '{"customer": "c9", "amount": 5}',
        "--id", "inv-c9", "--cron", "0 9 * * *", "--tz", "Europe/Berlin", "--token", SERVICE,
        "--overlap", "skip",
    )  # fmt: skip
    shown: dict[str, object] = {}
    for _ in range(100):  # the worker takes it, then its changelog says so
        out = await asyncio.to_thread(run, "show", "topologies.billing", "inv-c9", "--next", "3")
        shown = json.loads(out)
        if shown:
            break
        await asyncio.sleep(0.2)
    assert shown["when"] == "cron '0 9 * * *' in Europe/Berlin"
    nxt = shown["next"]
    assert isinstance(nxt, list) and len(nxt) == 3
    assert all(n["local"][11:16] == "09:00" for n in nxt)  # in the schedule's zone...
    assert all(n["utc"][11:16] in ("07:00", "08:00") for n in nxt)  # ...and in UTC
    assert shown["by"] == "billing-svc" and shown["token_id"]
    assert (shown["overlap"], shown["running"], shown["skipped"]) == ("skip", None, 0)
    assert "SERVICE" not in out and SERVICE not in out  # the token itself is never kept
    listed = await asyncio.to_thread(run, "list", "topologies.billing", "--format", "json")
    assert [json.loads(line)["id"] for line in listed.splitlines()] == ["inv-c9"]

    await asyncio.to_thread(operate, "pause", "--note", "audit")
    await asyncio.to_thread(operate, "trigger")  # once now, paused or not
    async with Client(kafka_url, topology_in(ns, billing.topology)) as client:
        (issued,) = await wait_records(client, "issued", 1, [worker], timeout=60)
    assert issued.intent == billing.Issued(customer="c9", invoice=1, amount=5,
                                           at=issued.intent.at)  # type: ignore[union-attr]
    for _ in range(100):
        status = json.loads(await asyncio.to_thread(run, "show", "topologies.billing", "inv-c9"))
        if status["status"] == "paused":
            break
        await asyncio.sleep(0.2)
    assert (status["status"], status["note"]) == ("paused", "audit")
    assert status["running"] is not None  # the triggered firing: no reactor answers it
    await asyncio.to_thread(operate, "cancel")
    for _ in range(100):
        listed = await asyncio.to_thread(run, "list", "topologies.billing", "--format", "json")
        ids = {json.loads(line)["id"]: json.loads(line) for line in listed.splitlines()}
        if "inv-c9" not in ids:
            break
        await asyncio.sleep(0.2)
    # the invoice it fired scheduled its reminders, with the service token's authority kept
    assert set(ids) == {"remind-c9-1", "escalate-c9-1"}
    assert {v["token_id"] for v in ids.values()} == {shown["token_id"]}


def test_schedule_user_errors_are_one_line() -> None:
    for args, message in [
        (("add", "topologies.billing", "billing.Invoice", '{"customer": "c", "amount": 1}',
          "--id", "x", "--cron", "0 9 * * *", "--tz", "Mars/Olympus"), "unknown time zone"),
        (("add", "topologies.billing", "billing.Invoice", '{"customer": "c"}', "--id", "x",
          "--every", "60"), "DATA: Field required"),
        (("add", "topologies.billing", "billing.Invoice", '{"customer": "c", "amount": 1}',
          "--id", "x"), "give one of --at, --after, --every or --cron"),
        (("list", "topologies.orders"), "has no scheduler"),
        (("add", "topologies.billing", "billing.Invoice", '{"customer": "c", "amount": 1}',
          "--id", "x", "--every", "60", "--overlap", "queue"), "--overlap must be one of"),
    ]:  # fmt: skip
        result = cli("schedule", *args, "--broker", "kafka://127.0.0.1:1")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert message in result.stderr, result.stderr
