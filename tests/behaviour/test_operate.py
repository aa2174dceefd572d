"""Operating what flows and what was set aside, on both transports (``memory://`` and a real
Kafka): ``Client.tail`` decodes emitted intents and every kind of set-aside record with its
reason, ``summarise`` counts a known hostile batch by reason, and ``Client.replay`` sends dead
letters through again after a fix (exactly once, audited, never twice unless asked), denials
again with their reason, and never to a topic the topology does not consume.

The command-line face (``packetflow tail``, ``set-aside``, ``replay``) is tested on Kafka in
tests/processes/test_operate_cli.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from support.running import WAIT, new_topology, running, unique
from support.tokens import forge

from packetflow import Client, Context, Intent, KeyPair, Security, issue_token
from packetflow.engine.client import Received
from packetflow.engine.codec import CONTEXT_HEADER, REPLAY_OF_HEADER, TOKEN_HEADER, TYPE_HEADER
from packetflow.engine.inspect import as_line, describe
from packetflow.engine.replay import ReplaySelection, plan_replay
from packetflow.engine.setaside import SetAside, original_headers, summarise
from packetflow.engine.transport import END, Record, StartAt
from packetflow.streams import Tumbling, agg, sample, window

KEY = KeyPair.generate("ops")


class Deposit(
    Intent, type_name="ops.Deposit", key="account", requires=["deposit:account/{account}"]
):
    account: str
    amount: int


class Receipt(Intent, type_name="ops.Receipt", key="account"):
    account: str
    balance: int


class Ping(Intent, type_name="ops.Ping", key="key"):
    key: str
    n: int


class Tick(Intent, type_name="ops.Tick", key="key"):
    key: str
    at: float  # event time, seconds


def fine(intent: Deposit) -> None:
    return None


def broken(intent: Deposit) -> None:
    if intent.amount == 13:
        raise ValueError("unlucky amount")


def always_broken(intent: Deposit) -> None:
    raise ValueError("bug in apply")


class Bank:
    """A topology whose reactor's bug can be fixed while it runs (``bank.check = fine``)."""

    def __init__(self, check: Callable[[Deposit], None] = broken) -> None:
        self.check = check
        topo = new_topology("ops", security=Security(trusted_keys=[KEY]))
        self.topology = topo
        self.deposits, self.receipts = unique("deposits"), unique("receipts")
        self.pings, self.ticks, self.closed = unique("pings"), unique("ticks"), unique("closed")
        topo.route(Receipt, self.receipts)
        topo.route(Ping, self.pings)

        @topo.reactor(Deposit, topic=self.deposits, state=0)
        def apply(intent: Deposit, ctx: Context, balance: int) -> tuple[int, Receipt]:
            self.check(intent)
            return balance + intent.amount, Receipt(
                account=intent.account, balance=balance + intent.amount
            )

        @topo.reactor(Ping, topic=self.pings, backpressure=sample(0.5), public=True)
        def pinged(intent: Ping, ctx: Context) -> None:
            return None

        window(
            topo, Tick, public=True, topic=self.ticks, every=Tumbling(10),
            aggregate=agg.count(), time="at", name="per10", emits=[],
        )(lambda result, ctx: None)


def token(holder: str, *grants: str, expires_in: int = 3600) -> str:
    """A token signed by the trusted key; ``expires_in`` < 0 makes one already expired."""
    return forge(KEY, None, holder, list(grants), exp=int(time.time()) + expires_in)


ALICE = issue_token("alice", ["deposit:account/a-*"], key=KEY, ttl="1h")


def as_alice(**kw: Any) -> Context:
    return Context.new("alice", token=ALICE, **kw)


async def tailed(client: Client, topic: str, **kw: Any) -> list[Received]:
    return [r async for r in client.tail(topic, **kw)]


def shown(received: Received, topic: str) -> dict[str, Any]:
    """What ``tail`` shows of a record, checked never to hold a token's value."""
    described = describe(received, topic)
    line = as_line(described)
    for raw in (dict(received.record.headers).get(TOKEN_HEADER), ALICE.encode()):
        if raw:
            assert raw.decode() not in orjson.dumps(described).decode()
            assert raw.decode() not in line
    assert "\x1b" not in line and "\x00" not in line
    return described


# -- tail --------------------------------------------------------------------------------


async def test_tail_decodes_emitted_intents_and_every_kind_of_set_aside_record(
    broker: str,
) -> None:
    bank = Bank()
    topo = bank.topology
    sent = as_alice()
    async with running(topo, broker) as run:
        await run.send(Deposit(account="a-1", amount=5), sent)
        await run.send(Deposit(account="a-1", amount=13), as_alice())  # the reactor raises
        await run.send(Deposit(account="b-1", amount=1), as_alice())  # not alice's account
        hostile = b'{"account": "a-1", "amount": \x00\x1b[31m'
        await run.client.send_raw(
            bank.deposits, hostile, key=b"a-1", headers=[(TYPE_HEADER, b"ops.Deposit")]
        )
        await run.client.send_many((Ping(key="p", n=n), None) for n in range(2))
        await run.send(Tick(key="t", at=time.time() + 3600))
        await run.send(Tick(key="t", at=time.time() - 3600))  # long closed: late
        await run.wait_for(bank.receipts, 1)
        await run.dead_letters(2)
        await run.denied(1)
        await run.wait_for(topo.drops_topic, 1)
        await run.wait_for(topo.late_topic, 1)
        client = run.client

        (receipt,) = await tailed(client, bank.receipts)
        seen = shown(receipt, bank.receipts)
        assert seen["type"] == "ops.Receipt" and seen["key"] == "a-1"
        assert seen["intent"] == {"account": "a-1", "balance": 5}
        assert seen["principal"] == "alice" and seen["trace_id"] == sent.trace_id
        assert seen["token"]["holder"] == "alice"
        assert seen["token"]["grants"] == ["deposit:account/a-*"]
        assert seen["topic"] == bank.receipts and "set_aside" not in seen

        dead = [shown(r, "dead-letters") for r in await tailed(client, topo.dead_letter_topic)]
        by_reason = {d["set_aside"]["reason"]: d for d in dead}
        assert set(by_reason) == {"reactor-error", "decode"}
        error = by_reason["reactor-error"]
        assert error["set_aside"]["reactor"] == "apply"
        assert error["set_aside"]["error"] == "ValueError: unlucky amount"
        assert error["set_aside"]["source"].startswith(f"{bank.deposits}/")
        assert error["intent"] == {"account": "a-1", "amount": 13}
        bad = by_reason["decode"]
        assert "intent" not in bad and bad["value"].startswith('{"account": "a-1", "amount": ')
        assert "\\x00\\x1b[31m" in bad["value"]  # escaped, never sent to the terminal raw

        (denied,) = [shown(r, "denied") for r in await tailed(client, topo.denied_topic)]
        assert denied["set_aside"]["reason"] == "insufficient"
        assert denied["set_aside"]["missing"] == ["deposit:account/b-1"]
        assert denied["intent"] == {"account": "b-1", "amount": 1}

        (dropped,) = [shown(r, "drops") for r in await tailed(client, topo.drops_topic)]
        assert dropped["set_aside"]["reason"] == "dropped"
        assert dropped["set_aside"]["pf-strategy"] == "sample"
        assert dropped["set_aside"]["reactor"] == "pinged"

        (late,) = [shown(r, "late") for r in await tailed(client, topo.late_topic)]
        assert late["set_aside"]["reason"] == "late" and late["set_aside"]["reactor"] == "per10"
        assert late["intent"]["key"] == "t"

        # filters and starting points
        deposits = await tailed(client, bank.deposits)
        assert len(deposits) == 4
        assert [r.record.key for r in await tailed(client, bank.deposits, key="b-1")] == [b"b-1"]
        assert await tailed(client, bank.deposits, intent_type="ops.Receipt") == []
        assert await tailed(client, bank.deposits, start=END) == []
        last = max(deposits, key=lambda r: r.record.offset).record
        from_offset = await tailed(client, bank.deposits, start=StartAt(offset=last.offset))
        assert last.offset in {r.record.offset for r in from_offset}
        assert all(r.record.offset >= last.offset for r in from_offset)
        later = await tailed(client, bank.deposits, start=StartAt(time_ms=last.timestamp + 1))
        assert later == []


async def test_tail_follows_records_as_they_arrive(broker: str) -> None:
    bank = Bank(fine)
    async with running(bank.topology, broker) as run:
        await run.send(Deposit(account="a-1", amount=1), as_alice())
        await run.wait_for(bank.receipts, 1)
        stream = run.client.tail(bank.receipts, start=END, follow=True, poll=0.05)
        first = stream.__anext__()  # the follower starts at the end before anything is sent
        task = asyncio.ensure_future(first)
        await asyncio.sleep(0.5 if broker.startswith("kafka") else 0.01)
        await run.send(Deposit(account="a-1", amount=2), as_alice())
        got = await asyncio.wait_for(task, WAIT)
        await stream.aclose()
        assert got.intent == Receipt(account="a-1", balance=3)


# -- summary -------------------------------------------------------------------------------


async def test_the_summary_counts_a_known_hostile_batch_by_reason(broker: str) -> None:
    bank = Bank(fine)
    topo = bank.topology
    rogue = KeyPair.generate("rogue")
    forged = issue_token("alice", ["deposit:account/*"], key=rogue, ttl="1h")
    expired = token("alice", "deposit:account/*", expires_in=-10)
    async with running(topo, broker) as run:
        for n in range(3):
            await run.send(Deposit(account=f"a-{n}", amount=1), Context.new("alice", token=expired))
        for n in range(2):
            await run.send(Deposit(account=f"a-{n}", amount=1), Context.new("alice", token=forged))
        await run.send(Deposit(account="b-9", amount=1), as_alice())
        for n in range(2):
            await run.client.send_raw(bank.deposits, b"\xff" * (n + 1), key=b"x")
        await run.denied(6)
        await run.dead_letters(2)
        found = [
            (kind, r.record)
            for kind in ("dead-letters", "denied")
            for r in await tailed(run.client, run.client.set_aside_topic(kind))
        ]
    rows = {(r.topic, r.reason, r.reactor, r.source_topic): r.count for r in summarise(found)}
    assert rows == {
        # a denial is about the record, before any reactor: none is named
        ("denied", "expired", None, bank.deposits): 3,
        ("denied", "unknown-key", None, bank.deposits): 2,
        ("denied", "insufficient", None, bank.deposits): 1,
        ("dead-letters", "missing-type", None, bank.deposits): 2,
    }
    first = summarise(found)[0]
    assert (first.reason, first.count) == ("expired", 3) and first.first_ms <= first.last_ms


# -- replay --------------------------------------------------------------------------------


async def replayed_events(client: Client) -> list[dict[str, Any]]:
    return [e for e in await client.read_audit() if e["event"] == "replayed"]


async def test_dead_letters_replayed_after_the_fix_are_processed_exactly_once(
    broker: str,
) -> None:
    bank = Bank(always_broken)
    topo = bank.topology
    async with running(topo, broker) as run:
        for amount in (1, 2, 4):
            await run.send(Deposit(account="a-1", amount=amount), as_alice())
        dead = await run.dead_letters(3)
        # set aside twice (an at-least-once redelivery): the same pf-source, replayed once
        copy = dead[0].record
        await run.client.send_raw(
            topo.dead_letter_topic, copy.value, key=copy.key, headers=copy.headers
        )
        await run.dead_letters(4)

        dry = await run.client.replay("dead-letters", dry_run=True, by="ops")
        assert [len(dry.plan.chosen), dict(dry.plan.skipped), dry.published] == [
            3, {"duplicate": 1}, []
        ]
        await run.idle()
        assert len(await run.read(bank.deposits)) == 3  # the dry run published nothing
        assert await replayed_events(run.client) == []

        bank.check = fine  # the bug is fixed
        progress: list[tuple[int, int]] = []
        report = await run.client.replay(
            "dead-letters", by="ops", progress=lambda done, total: progress.append((done, total))
        )
        assert len(report.published) == 3 and progress[-1] == (3, 3)
        receipts = await run.wait_for(bank.receipts, 3)
        assert run.state("apply", "a-1") == 7  # each deposit once
        assert sorted(r.intent.balance for r in receipts) == [1, 3, 7]  # type: ignore[union-attr]

        # byte for byte, with the sender's headers and pf-replay-of
        originals = {r.record.value: r.record for r in dead[:3]}
        replays = [r.record for r in await run.read(bank.deposits)][3:]
        for replay in replays:
            original = originals[replay.value]
            assert replay.key == original.key
            where = f"{original.topic}/{original.partition}/{original.offset}"
            assert list(replay.headers) == [
                *original_headers(original.headers),
                (REPLAY_OF_HEADER, where.encode()),
            ]

        events = await replayed_events(run.client)
        assert len(events) == 3 and {e["by"] for e in events} == {"ops"}
        assert {e["reason"] for e in events} == {"reactor-error"}

        again = await run.client.replay("dead-letters", by="ops")  # refused: replayed before
        assert again.published == [] and again.plan.skipped == {"already-replayed": 4}
        await run.idle()
        assert run.state("apply", "a-1") == 7


async def test_a_replayed_record_with_an_expired_token_is_denied_again(broker: str) -> None:
    bank = Bank(fine)
    topo = bank.topology
    expired = token("alice", "deposit:account/*", expires_in=-10)
    async with running(topo, broker) as run:
        await run.send(Deposit(account="a-1", amount=5), Context.new("alice", token=expired))
        (first,) = await run.denied(1)
        report = await run.client.replay("denied", ReplaySelection(reason="expired"), by="ops")
        assert len(report.published) == 1
        second = (await run.denied(2))[1]
        assert second.set_aside is not None and second.set_aside.reason == "expired"
        copy = f"{first.record.topic}/{first.record.partition}/{first.record.offset}"
        assert second.header(REPLAY_OF_HEADER) == copy
        assert run.state("apply", "a-1") is None

        # an operator replays it under their own token: their principal, audited as theirs
        operator = token("ops-oncall", "deposit:account/*")
        report = await run.client.replay(
            "denied", ReplaySelection(partition=first.record.partition,
                                      offsets=(first.record.offset, first.record.offset)),
            token=operator, again=True,
        )
        assert len(report.published) == 1
        (receipt,) = await run.wait_for(bank.receipts, 1)
        assert receipt.context is not None and receipt.context.principal == "ops-oncall"
        assert run.state("apply", "a-1") == 5
        events = await replayed_events(run.client)
        assert [(e["by"], e.get("token_id") is not None) for e in events] == [
            ("ops", False), ("ops-oncall", True)
        ]
        denials = [e for e in await run.client.read_audit() if e["event"] == "denied"]
        assert [e["reason"] for e in denials] == ["expired", "expired"]  # the first, the replay


# -- the trust boundary ----------------------------------------------------------------------


def _set_aside(source: str, offset: int, value: bytes = b"{}") -> Record:
    headers = (
        (TYPE_HEADER, b"ops.Deposit"),
        (CONTEXT_HEADER, b'{"intent_id": "i", "trace_id": "t", "span_id": "s"}'),
        ("pf-reason", b"reactor-error"),
        ("pf-source", source.encode()),
    )
    return Record("t.dead-letters", 0, offset, b"k", value, headers, 1000 + offset)


def test_a_forged_source_never_makes_a_replay_write_to_an_internal_topic() -> None:
    """Anyone who can produce can write a 'dead letter' naming any pf-source: only topics the
    topology consumes are replayed to."""
    records = [
        _set_aside("deposits/0/1", 0),
        _set_aside("t.apply.changelog/0/1", 1),
        _set_aside("t.revocations/0/2", 2),
        _set_aside("no-slashes", 3),
    ]
    plan = plan_replay(
        records, kind="dead-letters", selection=ReplaySelection(), sources={"deposits"},
        replayed=set(),
    )
    assert [item.topic for item in plan.chosen] == ["deposits"]
    assert plan.skipped == {"not-a-source": 3}


def test_only_the_engines_trailing_headers_are_taken_off_and_late_records_need_force() -> None:
    record = _set_aside("ticks/0/1", 0)
    sender_reason = (("pf-reason", b"the sender's own"), *record.headers)
    record = Record(record.topic, 0, 0, b"k", b"{}", sender_reason, 1)
    assert original_headers(record.headers) == [
        ("pf-reason", b"the sender's own"), (TYPE_HEADER, b"ops.Deposit"),
        (CONTEXT_HEADER, b'{"intent_id": "i", "trace_id": "t", "span_id": "s"}'),
    ]
    kw: dict[str, Any] = {"selection": ReplaySelection(), "sources": {"ticks"}, "replayed": set()}
    assert plan_replay([record], kind="late", **kw).skipped == {"late": 1}
    assert len(plan_replay([record], kind="late", force=True, **kw).chosen) == 1


@pytest.mark.parametrize(
    ("selection", "chosen"),
    [
        (ReplaySelection(), [0, 1, 2, 3]),
        (ReplaySelection(offsets=(1, 2)), [1, 2]),
        (ReplaySelection(partition=1, offsets=(0, 9)), []),
        (ReplaySelection(since_ms=1002), [2, 3]),
        (ReplaySelection(reason="expired"), []),
        (ReplaySelection(source="other"), []),
    ],
)
def test_a_selection_keeps_what_every_criterion_allows(
    selection: ReplaySelection, chosen: list[int]
) -> None:
    records = [_set_aside(f"deposits/0/{n}", n) for n in range(4)]
    plan = plan_replay(
        records, kind="dead-letters", selection=selection, sources={"deposits"}, replayed=set()
    )
    assert [int(item.copy.rsplit("/", 1)[1]) for item in plan.chosen] == chosen


def test_a_senders_own_set_aside_headers_neither_pass_for_the_engines_nor_are_lost() -> None:
    """Anyone can send pf-* headers: the engine's block is the last pf-reason onwards."""
    sent = (
        (TYPE_HEADER, b"ops.Deposit"),
        ("pf-reason", b"forged"),
        ("pf-truncated", b"false"),
        ("pf-source", b"t.apply.changelog/0/0"),
    )
    engine = (
        ("pf-reason", b"reactor-error"),
        ("pf-error", b"boom"),
        ("pf-source", b"deposits/1/7"),
        ("pf-truncated", b"true"),
        ("pf-original-size", b"2000000"),
    )
    record = Record("t.dead-letters", 0, 0, b"k", b'{"acc', (*sent, *engine), 1)
    facts = SetAside.of(record)
    assert facts is not None
    assert (facts.reason, facts.source, facts.truncated, facts.original_size) == (
        "reactor-error", "deposits/1/7", True, 2_000_000
    )
    assert original_headers(record.headers) == list(sent)
    plan = plan_replay(
        [record], kind="dead-letters", selection=ReplaySelection(), sources={"deposits"},
        replayed=set(),
    )
    assert plan.skipped == {"truncated": 1}  # the copy is not the record: never replayed


HOSTILE_HEADERS = [
    ("pf-type", b"\xff\xfe"),
    ("x-api-key", b"sk-live-123"),
    ("note", None),
    ("pf-reason", "\u202e[link=http://x]evil[/]\x1b[2J\x9b".encode()),
    ("pf-original-size", "\u00b2".encode()),
    ("pf-source", b"/"),
    ("pf-error", b"e" * 100_000),
]


def test_hostile_set_aside_records_are_shown_safely_and_never_stop_the_tools() -> None:
    value = orjson.dumps({"token": ALICE, "auth": f"Bearer {ALICE}", "n": "\x9b\u202e"})
    record = Record(
        "t.dead-letters", 0, 0, b"\x1b]8;;x\x07", value, HOSTILE_HEADERS, 10**17  # year 3e6
    )
    received = Received(record, None, None)
    described = describe(received, "dead-letters")
    text = orjson.dumps(described).decode()
    line = as_line(described)
    for shown_as in (text, line):
        assert ALICE not in shown_as and "sk-live-123" not in shown_as
        assert not any(c in shown_as for c in "\x1b\x07\x9b\u202e")
    assert described["headers"]["x-api-key"] == "(hidden)"
    assert described["timestamp"] == f"{10**17} ms since the epoch"
    assert len(described["set_aside"]["error"]) < 1100  # cut, with its length
    assert described["set_aside"]["original_size"] is None
    rows = summarise([("dead-letters", record)])
    assert [(r.reason[:1], r.source_topic, r.count) for r in rows] == [("\u202e", None, 1)]
    plan = plan_replay(
        [record], kind="dead-letters", selection=ReplaySelection(), sources={"deposits"},
        replayed=set(),
    )
    assert plan.skipped == {"not-a-source": 1}


def test_a_token_inside_an_intents_fields_is_hidden_too() -> None:
    record = Record(
        "deposits", 0, 0, b"a-1", b"{}",
        ((TYPE_HEADER, b"ops.Deposit"), (TOKEN_HEADER, ALICE.encode())), 1_700_000_000_000,
    )
    note = Deposit(account="a-1", amount=1).model_copy(update={"account": f"x {ALICE} y"})
    described = describe(Received(record, note, as_alice()), "deposits")
    assert described["intent"]["account"] == "x (token hidden) y"
    assert described["token"]["holder"] == "alice" and ALICE not in as_line(described)


def test_a_passed_deadline_is_replayed_only_by_force_and_a_replay_names_its_own_copy() -> None:
    record = _set_aside("deposits/0/1", 5)
    headers = list(record.headers)
    headers[2:2] = [("pf-replay-of", b"t.dead-letters/0/1")]  # it was replayed once before
    headers[-2] = ("pf-reason", b"deadline")
    record = Record(record.topic, 0, 5, b"k", b"{}", tuple(headers), 1)
    kw: dict[str, Any] = {
        "selection": ReplaySelection(), "sources": {"deposits"}, "replayed": set()
    }
    assert plan_replay([record], kind="dead-letters", **kw).skipped == {"deadline": 1}
    (item,) = plan_replay([record], kind="dead-letters", force=True, **kw).chosen
    assert [v for k, v in item.headers if k == REPLAY_OF_HEADER] == [b"t.dead-letters/0/5"]


async def test_garbage_on_the_audit_topic_does_not_stop_a_replay() -> None:
    bank = Bank(always_broken)
    topo = bank.topology
    async with running(topo, f"memory://{unique('audit')}") as run:
        await run.send(Deposit(account="a-1", amount=1), as_alice())
        await run.dead_letters(1)
        for junk in (b"not json", b"[1]", b'{"event": "replayed", "at": "soon"}'):
            await run.client.send_raw(topo.audit_topic, junk)
        bank.check = fine
        report = await run.client.replay("dead-letters", by="ops")
        assert len(report.published) == 1
        await run.wait_for(bank.receipts, 1)
