"""Worker processes on a real Kafka broker, and the ``packetflow`` command line.

The Kafka tests run ``python -m packetflow worker topologies.orders`` as real subprocesses,
each test in its own ``$PACKETFLOW_NAMESPACE`` so no two tests share topics or groups. They
check what only whole processes can show: state restored from the changelog after a
restart, a consumer group split between two processes, and a SIGTERM in the middle of a
stream that loses and duplicates nothing. Every wait is bounded, and every subprocess is
killed at teardown whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition as AioTP
from support.workerproc import (
    WORKER_KEY,
    WorkerProcess,
    assert_user_error,
    cli,
    logs,
    new_namespace,
    orders_topology,
    wait_records,
    wait_split,
)

from packetflow import Client, Context, Intent, Received, Topology, issue_token
from packetflow.engine.codec import TOKEN_HEADER, TYPE_HEADER
from topologies import orders

# the worker processes trust WORKER_KEY (tests/support/workerproc.py): it signs these tokens
TELLER = Context.new(
    "teller-1", token=issue_token("teller-1", ["teller:account/*"], key=WORKER_KEY, ttl="1d")
)
AUDITOR = Context.new(
    "auditor-1", token=issue_token("auditor-1", ["auditor:account/*"], key=WORKER_KEY, ttl="1d")
)


# -- helpers -----------------------------------------------------------------------------


def _ctx(template: Context) -> Context:
    """A fresh root context (own intent id) with ``template``'s principal and token."""
    return Context.new(template.principal, template.capabilities, token=template.token)


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    try:
        await consumer.start()
        try:
            yield admin, consumer
        finally:
            await consumer.stop()
    finally:
        await admin.close()


def _partitions(topology: Topology, topic: str) -> list[AioTP]:
    physical = topology.physical(topic)
    return [AioTP(physical, p) for p in range(topology.topics[topic])]


async def _end_total(consumer: AIOKafkaConsumer, tps: list[AioTP]) -> int:
    return sum((await consumer.end_offsets(tps)).values())


async def _wait_caught_up(
    bootstrap: str,
    topology: Topology,
    topics: Iterable[str],
    workers: Iterable[WorkerProcess] = (),
    timeout: float = 60.0,
) -> None:
    """Wait until the topology's group has committed every record of ``topics``."""
    tps = [tp for t in topics for tp in _partitions(topology, t)]
    deadline = time.monotonic() + timeout
    async with _admin(bootstrap) as (admin, consumer):
        while True:
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(topology.group_id)
            behind = {
                f"{tp.topic}[{tp.partition}]":
                    ends[tp] - (committed[tp].offset if tp in committed else 0)
                for tp in tps
            }
            if not any(behind.values()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"group {topology.group_id} not caught up: {behind}\n{logs(workers)}"
                )
            await asyncio.sleep(0.1)


def _by_account(received: Iterable[Received]) -> dict[str, list[Intent]]:
    out: dict[str, list[Intent]] = {}
    for r in received:
        assert r.intent is not None, f"undecodable ledger record {r.record}"
        out.setdefault(r.intent.account, []).append(r.intent)  # type: ignore[attr-defined]
    return out


def _model(intents: Iterable[Intent], balances: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """The ledger entries (type, balance) per account the orders reactor must emit."""
    out: dict[str, list[tuple[str, int]]] = {}
    for intent in intents:
        acct: str = intent.account  # type: ignore[attr-defined]
        bal = balances.get(acct, 0)
        if isinstance(intent, orders.Deposit):
            bal += intent.amount
            entry = ("orders.Deposited", bal)
        elif isinstance(intent, orders.Withdraw):
            if intent.amount > bal:
                entry = ("orders.WithdrawalRejected", bal)
            else:
                bal -= intent.amount
                entry = ("orders.Withdrawn", bal)
        elif isinstance(intent, orders.AuditBalance):
            entry = ("orders.BalanceReported", bal)
        else:  # pragma: no cover - the tests only send the above
            raise TypeError(intent)
        balances[acct] = bal
        out.setdefault(acct, []).append(entry)
    return out


def _entries(intents: list[Intent]) -> list[tuple[str, int]]:
    return [(type(i).intent_type, i.balance) for i in intents]  # type: ignore[attr-defined]


def _deposits(count: int, accounts: int) -> list[tuple[Intent, Context]]:
    return [
        (orders.Deposit(account=f"acct-{n % accounts:04d}", amount=n % 13 + 1), _ctx(TELLER))
        for n in range(count)
    ]


def _check_deposits(sent: list[tuple[Intent, Context]], ledger: list[Received]) -> None:
    """Exactly one Deposited per Deposit (by causation id), with the running balance."""
    ids = Counter(r.context.causation_id for r in ledger if r.context is not None)
    duplicated = {i: n for i, n in ids.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} intents produced more than one ledger entry"
    missing = [ctx.intent_id for _, ctx in sent if ctx.intent_id not in ids]
    assert not missing, f"{len(missing)} of {len(sent)} deposits have no ledger entry"
    assert len(ledger) == len(sent)
    expected: dict[str, list[int]] = {}
    totals: dict[str, int] = {}
    for intent, _ in sent:
        acct = intent.account  # type: ignore[attr-defined]
        totals[acct] = totals.get(acct, 0) + intent.amount  # type: ignore[attr-defined]
        expected.setdefault(acct, []).append(totals[acct])
    got = {a: [e.balance for e in es] for a, es in _by_account(ledger).items()}  # type: ignore[attr-defined]
    assert got == expected  # every running balance, in order: no deposit lost or applied twice


# -- worker processes --------------------------------------------------------------------


@pytest.mark.kafka
async def test_restarted_worker_resumes_from_changelog_state(
    kafka_url: str, kafka_bootstrap: str, spawn: Any
) -> None:
    ns = new_namespace()
    topology = orders_topology(ns)
    accounts = [f"acct-{i}" for i in range(5)]
    first = [
        intent
        for i, a in enumerate(accounts)
        for intent in (
            orders.Deposit(account=a, amount=100 * (i + 1)),
            orders.Withdraw(account=a, amount=30),
            orders.Deposit(account=a, amount=7),
            orders.Withdraw(account=a, amount=10_000),  # rejected: insufficient funds
        )
    ]
    # Withdrawals only the balance carried over from the first run can cover: a worker that
    # started from empty state would reject them and report 5 instead.
    second = [
        intent
        for i, a in enumerate(accounts)
        for intent in (
            orders.Withdraw(account=a, amount=100 * (i + 1) - 40),
            orders.Deposit(account=a, amount=5),
        )
    ]
    audits = [orders.AuditBalance(account=a) for a in accounts]
    balances: dict[str, int] = {}
    expected_first = _model(first, balances)
    expected_rest = _model([*second, *audits], balances)
    assert all(balances[a] == 22 for a in accounts)

    async with Client(kafka_url, topology) as client:
        w1 = spawn("first", ns)
        await client.send_many((i, _ctx(TELLER)) for i in first)
        await wait_records(client, "ledger", len(first), [w1])
        await w1.terminate()
        counts1 = w1.final_counts()
        assert counts1["processed"]["accounts"] == len(first)

        w2 = spawn("second", ns)
        await client.send_many((i, _ctx(TELLER)) for i in second)
        await client.send_many((i, _ctx(AUDITOR)) for i in audits)
        total = len(first) + len(second) + len(audits)
        await wait_records(client, "ledger", total, [w1, w2])
        await _wait_caught_up(kafka_bootstrap, topology, ["accounts", "ledger"], [w2], 30)
        await w2.terminate()

        ledger = await client.read("ledger")
        statements = await client.read(topology.changelog_topic("statements"))

    assert len(ledger) == total
    got = {a: _entries(es) for a, es in _by_account(ledger).items()}
    assert got == {a: expected_first[a] + expected_rest[a] for a in accounts}
    reported = {r.intent.account: r.intent.balance for r in ledger  # type: ignore[union-attr]
                if isinstance(r.intent, orders.BalanceReported)}
    assert reported == dict.fromkeys(accounts, 22)
    assert {r.intent.principal for r in ledger  # type: ignore[union-attr]
            if isinstance(r.intent, orders.BalanceReported)} == {"auditor-1"}

    counts2 = w2.final_counts()
    assert counts2["processed"]["accounts"] == len(second) + len(audits)  # nothing re-run
    assert counts2["restored"]["accounts"] >= len(accounts)
    assert re.search(r"assigned .*accounts\[0\]", w2.log())

    # the statements reactor (on the ledger) kept counting across the restart too
    last: dict[str, dict[str, int]] = {}
    for r in statements:
        assert r.record.key is not None and r.record.value is not None
        last[r.record.key.decode()] = json.loads(r.record.value)
    assert last == {
        a: {"entries": 4 + 2 + 1, "rejected": 1} for a in accounts
    }


@pytest.mark.kafka
async def test_two_worker_processes_split_the_partitions(
    kafka_url: str, kafka_bootstrap: str, spawn: Any
) -> None:
    ns = new_namespace()
    topology = orders_topology(ns)
    every = {f"{topology.physical(t)}[{p}]" for t in ("accounts", "ledger") for p in range(4)}
    sent = _deposits(2000, accounts=100)

    async with Client(kafka_url, topology) as client:
        a = spawn("a", ns)
        await a.wait_log(r"assigned ")
        b = spawn("b", ns)
        split = await wait_split((a, b), every, 30)
        assert any("accounts" in tp for tp in split[0])
        assert any("accounts" in tp for tp in split[1])

        await client.send_many(sent)
        await wait_records(client, "ledger", len(sent), [a, b])
        await _wait_caught_up(kafka_bootstrap, topology, ["accounts", "ledger"], [a, b], 30)
        assert (a.assignment(), b.assignment()) == split  # no rebalance while working
        await asyncio.gather(a.terminate(), b.terminate())
        ledger = await client.read("ledger")

    _check_deposits(sent, ledger)
    processed = [w.final_counts()["processed"] for w in (a, b)]
    assert all(p.get("accounts", 0) > 0 for p in processed), processed
    assert sum(p["accounts"] for p in processed) == len(sent)  # each deposit processed once
    assert sum(p["statements"] for p in processed) == len(sent)


@pytest.mark.kafka
async def test_sigterm_mid_stream_loses_and_duplicates_nothing(
    kafka_url: str, kafka_bootstrap: str, spawn: Any
) -> None:
    ns = new_namespace()
    topology = orders_topology(ns)
    sent = _deposits(20_000, accounts=500)
    ledger_tps = _partitions(topology, "ledger")

    async with Client(kafka_url, topology) as client, _admin(kafka_bootstrap) as (_, probe):
        first = spawn("first", ns)
        await first.wait_log(r"assigned ")

        async def produce() -> None:
            for start in range(0, len(sent), 1000):
                await client.send_many(sent[start:start + 1000])
                await asyncio.sleep(0.02)

        producing = asyncio.create_task(produce())
        try:
            deadline = time.monotonic() + 30
            while (seen := await _end_total(probe, ledger_tps)) <= 1000:
                assert time.monotonic() < deadline, f"ledger at {seen} after 30s:\n{first.log()}"
                await asyncio.sleep(0.01)
            took = await first.terminate(timeout=15)
            at_exit = await _end_total(probe, ledger_tps)
            await asyncio.wait_for(producing, 60)
        finally:
            producing.cancel()
        assert took < 15
        processed_first = first.final_counts()["processed"]["accounts"]
        assert 1000 < processed_first < len(sent), "the worker was not stopped mid-stream"
        assert at_exit == processed_first  # each processed deposit's entry was flushed

        second = spawn("second", ns)
        await _wait_caught_up(kafka_bootstrap, topology, ["accounts", "ledger"], [second], 60)
        await second.terminate()
        ledger = await client.read("ledger")

    _check_deposits(sent, ledger)
    counts = second.final_counts()
    assert counts["restored"]["accounts"] > 0
    assert processed_first + counts["processed"]["accounts"] == len(sent)


@pytest.mark.kafka
async def test_rebalances_under_load_lose_and_duplicate_nothing(
    kafka_url: str, kafka_bootstrap: str, spawn: Any
) -> None:
    """A second worker joins mid-stream, then the first leaves mid-stream: both hand-overs
    are graceful (the batch in flight commits before the partition moves), so every deposit
    is applied exactly once and the running balances never skip or repeat."""
    ns = new_namespace()
    topology = orders_topology(ns)
    every = {f"{topology.physical(t)}[{p}]" for t in ("accounts", "ledger") for p in range(4)}
    sent = _deposits(20_000, accounts=300)
    ledger_tps = _partitions(topology, "ledger")
    url = f"{kafka_url}?heartbeat_interval_ms=300"  # notice rebalances quickly

    async with Client(kafka_url, topology) as client, _admin(kafka_bootstrap) as (_, probe):
        a = spawn("a", ns, url)
        await a.wait_log(r"assigned ")

        async def produce() -> None:
            for start in range(0, len(sent), 500):
                await client.send_many(sent[start:start + 500])
                await asyncio.sleep(0.1)

        async def ledger_above(n: int, timeout: float = 30) -> int:
            deadline = time.monotonic() + timeout
            while (seen := await _end_total(probe, ledger_tps)) <= n:
                assert time.monotonic() < deadline, f"ledger at {seen}:\n{a.log()}"
                await asyncio.sleep(0.01)
            return seen

        producing = asyncio.create_task(produce())
        try:
            await ledger_above(2000)
            b = spawn("b", ns, url)
            await wait_split((a, b), every, 20, disjoint=False)
            at_split = await _end_total(probe, ledger_tps)
            await ledger_above(at_split + 1000)
            await a.terminate()
            at_leave = await _end_total(probe, ledger_tps)
            await asyncio.wait_for(producing, 60)
        finally:
            producing.cancel()
        await _wait_caught_up(kafka_bootstrap, topology, ["accounts", "ledger"], [b], 60)
        await b.terminate()
        ledger = await client.read("ledger")

    assert at_leave < len(sent), "the stream ended before the first worker left"
    _check_deposits(sent, ledger)
    processed = [w.final_counts()["processed"].get("accounts", 0) for w in (a, b)]
    assert all(processed), processed
    assert sum(processed) == len(sent)
    assert re.search(r"revoked ", a.log())  # a gave up partitions to b while running


# -- command line ------------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_topology_show_text_lists_everything() -> None:
    result = cli("topology", "show", "topologies.orders")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "topology orders (consumer group orders, at-least-once)" in text
    for line in (
        "accounts  [4 partitions]  read by: accounts",
        "ledger  [4 partitions]  read by: statements",
        "orders.dead-letters  (dead letters)",
        "orders.denied  (denied intents)",
        "accounts  <- accounts, state Account -> orders.accounts.changelog",
        "statements  <- ledger, state Statement -> orders.statements.changelog",
        "orders.Deposit v1  -> accounts, key account; requires deposit:account/{account}",
        "orders.Withdraw v1  -> accounts, key account; requires withdraw:account/{account}",
        "orders.Transfer v1  -> accounts, key source; requires transfer:account/{source}",
        "orders.AuditBalance v1  -> accounts, key account; requires read:account/{account}",
        "orders.Deposited v1  -> ledger, key account; requires nothing",
        "teller => deposit, read, transfer, withdraw",
    ):
        assert line in text, f"{line!r} not in:\n{text}"


def test_topology_show_uses_the_namespace() -> None:
    result = cli("topology", "show", "topologies.orders", "--format", "json", namespace="ns1")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["group"] == "ns1.orders"
    assert {t["name"] for t in data["topics"]} == {"ns1.accounts", "ns1.ledger"}


def test_topology_show_mermaid_and_json() -> None:
    mermaid = cli("topology", "show", "topologies.orders", "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("flowchart")
    assert "r_accounts" in mermaid.stdout

    result = cli("topology", "show", "topologies.orders", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "orders"
    assert {t["name"]: t["partitions"] for t in data["topics"]} == {"accounts": 4, "ledger": 4}
    assert {r["name"]: r["stateful"] for r in data["reactors"]} == {
        "accounts": True, "statements": True,
    }
    types = {i["type"]: i for i in data["intent_types"]}
    assert types["orders.Deposit"]["requires"] == ["deposit:account/{account}"]
    assert types["orders.Deposit"]["topic"] == "accounts"
    assert types["orders.TransferCredit"]["requires"] == []
    assert data["capability_hierarchy"]["admin"] == ["auditor", "teller"]


@pytest.mark.kafka
async def test_send_one_intent_with_capabilities_and_principal(kafka_url: str) -> None:
    ns = new_namespace()
    result = await asyncio.to_thread(
        cli, "send", "orders.Deposit", '{"account": "acct-7", "amount": 42}',
        "--topology", "topologies.orders", "--broker", kafka_url,
        "--capability", "teller:account/*", "-c", "read:audit/*", "--principal", "alice",
        "--force",  # orders takes signed tokens only: this checks what goes on the wire
        namespace=ns,
    )
    assert result.returncode == 0, result.stderr
    assert re.match(rf"sent orders\.Deposit to {ns}\.accounts\[\d\] at offset 0", result.stdout)

    async with Client(kafka_url, orders_topology(ns)) as client:
        (got,) = await client.read("accounts")
    assert got.intent == orders.Deposit(account="acct-7", amount=42)
    assert got.record.key == b"acct-7"
    assert got.context is not None
    assert got.context.principal == "alice"
    assert [str(c) for c in got.context.capabilities] == ["teller:account/*", "read:audit/*"]
    assert got.header(TYPE_HEADER) == "orders.Deposit"


@pytest.mark.kafka
async def test_send_one_intent_with_a_token(kafka_url: str) -> None:
    ns = new_namespace()
    assert TELLER.token is not None
    result = await asyncio.to_thread(
        cli, "send", "orders.Deposit", '{"account": "acct-7", "amount": 42}',
        "--topology", "topologies.orders", "--broker", kafka_url, "--token", TELLER.token,
        namespace=ns,
    )
    assert result.returncode == 0, result.stderr
    async with Client(kafka_url, orders_topology(ns)) as client:
        (got,) = await client.read("accounts")
    assert got.context is not None
    assert got.context.principal == "teller-1"  # the token's holder unless -p says otherwise
    assert got.context.token == TELLER.token
    assert got.header(TOKEN_HEADER) == TELLER.token
    assert got.header("pf-capabilities") is None


@pytest.mark.kafka
async def test_send_file_of_json_lines(kafka_url: str, tmp_path: Path) -> None:
    ns = new_namespace()
    lines = [
        {"type": "orders.Deposit", "data": {"account": "a", "amount": 1}},
        {"type": "Withdraw", "data": {"account": "b", "amount": 2}, "principal": "bob",
         "capabilities": ["withdraw:account/b"]},
        {"type": "orders.AuditBalance", "data": {"account": "c"}, "key": "custom-key"},
    ]
    path = tmp_path / "intents.jsonl"
    path.write_text(
        "# a comment line\n\n" + "\n".join(json.dumps(line) for line in lines) + "\n"
    )
    result = await asyncio.to_thread(
        cli, "send", "--file", str(path), "-t", "topologies.orders", "--broker", kafka_url,
        "--principal", "cli-user", "--capability", "teller:account/*",
        "--force",  # orders takes signed tokens only: this checks what goes on the wire
        namespace=ns,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sent 3 intents to {ns}.accounts"

    async with Client(kafka_url, orders_topology(ns)) as client:
        received = await client.read("accounts")
    by_type = {type(r.intent).__name__: r for r in received}
    assert set(by_type) == {"Deposit", "Withdraw", "AuditBalance"}
    deposit, withdraw, audit = by_type["Deposit"], by_type["Withdraw"], by_type["AuditBalance"]
    assert deposit.intent == orders.Deposit(account="a", amount=1)
    assert deposit.context is not None and deposit.context.principal == "cli-user"
    assert [str(c) for c in deposit.context.capabilities] == ["teller:account/*"]
    # a line's own principal and capabilities replace the command line's defaults
    assert withdraw.context is not None and withdraw.context.principal == "bob"
    assert [str(c) for c in withdraw.context.capabilities] == ["withdraw:account/b"]
    assert audit.record.key == b"custom-key"
    assert len({r.context.intent_id for r in received if r.context}) == 3


DEAD_BROKER = "kafka://127.0.0.1:1"  # refused at once; the checks below fail before connecting
DEPOSIT = '{"account": "a", "amount": 5}'


def _bad_file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


GOOD_LINE = json.dumps({"type": "orders.Deposit", "data": {"account": "a", "amount": 1}})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("topology", "show", "nosuch.module"), r"no module named 'nosuch\.module'",
                     id="unknown-module-show"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-t", "topologies.nosuch",
                      "-b", DEAD_BROKER), r"no module named 'topologies\.nosuch'",
                     id="unknown-module-send"),
        pytest.param(("worker", "nosuch.module", "-b", DEAD_BROKER), r"no module named",
                     id="unknown-module-worker"),
        pytest.param(("topology", "show", "topologies.orders", "--format", "xml"),
                     r"unknown format 'xml'", id="unknown-format"),
        pytest.param(("send", "orders.Nope", "{}", "-t", "topologies.orders", "-b", DEAD_BROKER),
                     r"unknown intent type 'orders\.Nope' \(known: orders\.AuditBalance",
                     id="unknown-intent-type"),
        pytest.param(("send", "orders.Deposit", "{bad", "-t", "topologies.orders",
                      "-b", DEAD_BROKER), r"DATA: invalid JSON", id="invalid-json"),
        pytest.param(("send", "orders.Deposit", '{"account": "a", "amount": -5}',
                      "-t", "topologies.orders", "-b", DEAD_BROKER),
                     r"Deposit: amount: Input should be greater than 0", id="validation"),
        pytest.param(("send", "orders.Deposit", '{"amount": 5}', "-t", "topologies.orders",
                      "-b", DEAD_BROKER), r"Deposit: account: Field required",
                     id="missing-field"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-c", ":x", "-t", "topologies.orders",
                      "-b", DEAD_BROKER), r"invalid capability ':x'", id="bad-capability"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-t", "topologies.orders",
                      "--token", "nope", "-b", DEAD_BROKER),
                     r"arguments: token: token is not 'payload\.signature'", id="bad-token"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-t", "topologies.orders",
                      "--token", "a.b", "-c", "teller:account/*", "-b", DEAD_BROKER),
                     r"give --token or --capability, not both", id="token-and-capability"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-t", "topologies.orders",
                      "-b", "memory://"), r"memory:// lives inside one process", id="memory-send"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-t", "topologies.orders",
                      "-b", "http://localhost:9092"), r"unsupported broker URL 'http://",
                     id="bad-scheme-send"),
        pytest.param(("worker", "topologies.orders", "-b", "redis://x"),
                     r"unsupported broker URL 'redis://x'", id="bad-scheme-worker"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-b", DEAD_BROKER),
                     r"name the topology with --topology", id="missing-topology"),
        pytest.param(("send", "-t", "topologies.orders", "-b", DEAD_BROKER),
                     r"give an intent type", id="nothing-to-send"),
        pytest.param(("send", "orders.Deposit", DEPOSIT, "-t", "topologies.orders",
                      "--token", TELLER.token or "", "-b", DEAD_BROKER),
                     r"cannot send to kafka://127\.0\.0\.1:1: (?!.*KafkaConnectionError.*"
                     r"KafkaConnectionError)", id="unreachable-broker"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert_user_error(result, message)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        pytest.param((GOOD_LINE, "", "{oops"), r"bad\.jsonl:3: invalid JSON", id="malformed"),
        pytest.param((GOOD_LINE, "[1, 2]"), r'bad\.jsonl:2: expected an object with "type"',
                     id="not-an-object"),
        pytest.param(
            ("# comment", json.dumps({"type": "orders.Deposit", "data": {"account": "a"}})),
            r"bad\.jsonl:2: Deposit: amount: Field required", id="invalid-intent"),
        pytest.param((GOOD_LINE, json.dumps({"type": "orders.Nope", "data": {}})),
                     r"bad\.jsonl:2: unknown intent type 'orders\.Nope'", id="unknown-type"),
        pytest.param((json.dumps({"type": "orders.Deposit", "data": {"account": "a", "amount": 1},
                                  "capabilities": "teller:account/a"}),),
                     r'bad\.jsonl:1: "capabilities" must be a list', id="capabilities-string"),
        pytest.param((json.dumps({"type": "orders.Deposit", "data": {"account": "a", "amount": 1},
                                  "key": 5}),),
                     r'bad\.jsonl:1: "key" must be a string', id="key-not-string"),
        pytest.param(("", "# only a comment"), r"bad\.jsonl: no intents in it", id="empty"),
    ],
)
def test_send_file_errors_name_the_line(
    tmp_path: Path, lines: tuple[str, ...], message: str
) -> None:
    path = _bad_file(tmp_path, *lines)
    assert_user_error(
        cli("send", "--file", path, "-t", "topologies.orders", "-b", DEAD_BROKER), message
    )


def test_send_missing_file_is_a_user_error(tmp_path: Path) -> None:
    result = cli("send", "--file", str(tmp_path / "absent.jsonl"), "-t", "topologies.orders",
                  "-b", DEAD_BROKER)
    assert_user_error(result, r"cannot read .*absent\.jsonl: No such file")


def test_kafka_status_of_unused_port_is_not_running(tmp_path: Path) -> None:
    port = _unused_port()
    result = cli("kafka", "status", "--port", str(port), "--home", str(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Kafka not running on 127.0.0.1:{port}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
