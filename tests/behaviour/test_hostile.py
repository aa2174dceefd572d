"""A corpus of hostile records, each with the outcome the engine promises, on both transports.

Whoever can produce to a topic can write anything: every record below is what such a
producer could send (or what a buggy reactor could cause). For each one the test asserts
where it went and why: processed, or set aside byte for byte on the dead-letter or denied
topic with its ``pf-reason``. None of them may stop the worker, and none may let a failed
record's effects escape: after the whole corpus the worker still runs and a good record still
goes through.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from support.running import new_topology, running, unique

from packetflow import Context, Intent, KeyPair, Security, emit, issue_token
from packetflow.engine.codec import (
    CONTEXT_HEADER,
    MAC_HEADER,
    TOKEN_HEADER,
    TYPE_HEADER,
    VERSION_HEADER,
    encode,
)
from packetflow.engine.security.seal import Sealer

KEY = KeyPair.generate("hostile")
SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))
TELLER = issue_token("teller-1", ["teller:account/*", "teller:key/*"], key=KEY, ttl="1h")
SMALL = 64 * 1024  # max_record_bytes of the corpus topology: big records stay cheap


class Deposit(Intent, type_name="hostile.Deposit", key="account",
              requires=["deposit:account/{account}"]):
    account: str
    amount: int
    memo: Any = None  # takes any JSON: its values are checked for NaN and Infinity too


class Transfer(Intent, type_name="hostile.Transfer", key="source",
               requires=["transfer:account/{source}"]):
    source: str
    target: str
    amount: int


class Credit(Intent, type_name="hostile.Credit", key="account", internal=True):
    account: str
    amount: int


class Balance(Intent, type_name="hostile.Balance", key="account"):
    account: str
    balance: int
    principal: str | None


class Shout(Intent, type_name="hostile.Shout", key="key", requires=["shout:key/{key}"]):
    key: str
    text: str
    times: int = 1
    to: str | None = None  # where a careless reactor sends its echo


class Echo(Intent, type_name="hostile.Echo", key="key"):
    key: str
    text: str


class Stall(Intent, type_name="hostile.Stall", key="key", requires=["shout:key/{key}"]):
    key: str
    seconds: float


class Ask(Intent, type_name="hostile.Ask", key="key", requires=["shout:key/{key}"]):
    key: str


class Answer(Intent, type_name="hostile.Answer"):
    text: str


@dataclass
class Corpus:
    topology: Any
    accounts: str
    shouts: str
    balances: str
    echoes: str


def corpus_topology() -> Corpus:
    topo = new_topology(
        "hostile",
        capabilities={"teller": ["deposit", "transfer", "shout"]},
        security=Security(trusted_keys=[KEY], worker_secret=SECRET),
        max_record_bytes=SMALL,
        reactor_timeout=0.3,
    )
    accounts, shouts = unique("accounts"), unique("shouts")
    balances, echoes = unique("balances"), unique("echoes")
    topo.route(Balance, balances)
    topo.route(Echo, echoes)
    topo.route(Credit, accounts)

    @topo.reactor(Deposit | Transfer | Credit, topic=accounts, state=int)
    def account(intent: Deposit | Transfer | Credit, ctx: Context, balance: int) -> Any:
        """The README's pattern: state=int, a running balance."""
        match intent:
            case Transfer(source=source, target=target, amount=amount):
                new = balance - amount
                return new, [Credit(account=target, amount=amount),
                             Balance(account=source, balance=new, principal=ctx.principal)]
            case Deposit(account=acct, amount=amount) | Credit(account=acct, amount=amount):
                new = balance + amount
                return new, [Balance(account=acct, balance=new, principal=ctx.principal)]
        raise TypeError(intent)

    @topo.reactor(Shout, topic=shouts)
    def shout(intent: Shout, ctx: Context) -> Any:
        echo = Echo(key=intent.key, text=intent.text * intent.times)
        return emit(echo, topic=intent.to) if intent.to else echo

    @topo.reactor(Stall | Ask, topic=unique("slow"), name="slow")
    async def slow(intent: Stall | Ask, ctx: Context) -> Any:
        if isinstance(intent, Stall):
            await asyncio.sleep(intent.seconds)
        return None

    return Corpus(topo, accounts, shouts, balances, echoes)


def raw(intent: Intent, context: Context | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
    return encode(intent, context or Context.new(token=TELLER))


def swap(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == name else v) for k, v in headers]


async def test_no_hostile_record_stops_the_worker_and_each_lands_where_promised(
    broker: str,
) -> None:
    c = corpus_topology()
    topo = c.topology
    slow_topic = topo.reactors["slow"].topic
    revocations = topo.physical(topo.revocations_topic)
    good_value, good_headers = raw(Deposit(account="a1", amount=5))
    sealer = Sealer([OTHER_SECRET])

    # (reason, topic it goes to, key, value, headers); expected on "dead" or "denied"
    cases: list[tuple[str, str, str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []

    def case(reason: str, where: str, topic: str, value: bytes | None,
             headers: list[tuple[str, bytes]], key: bytes | None = b"a1") -> None:
        cases.append((reason, where, topic, key, value, headers))

    naive = orjson.loads(dict(good_headers)[CONTEXT_HEADER])
    naive["deadline"] = "2099-01-01T00:00:00"  # no time zone: ambiguous, refused
    case("bad-context", "dead", c.accounts, good_value,
         swap(good_headers, CONTEXT_HEADER, orjson.dumps(naive)))
    case("bad-context", "dead", c.accounts, good_value,
         swap(good_headers, CONTEXT_HEADER, dict(good_headers)[CONTEXT_HEADER][:17]))
    case("empty", "dead", c.accounts, b"", good_headers)
    case("empty", "dead", c.accounts, None, good_headers)
    case("missing-type", "dead", c.accounts, good_value,
         [h for h in good_headers if h[0] != TYPE_HEADER])
    case("unknown-type", "dead", c.accounts, good_value,
         swap(good_headers, TYPE_HEADER, b"hostile.Nope"))
    case("schema-version", "dead", c.accounts, good_value,
         swap(good_headers, VERSION_HEADER, b"9"))
    case("bad-header", "dead", c.accounts, good_value,
         swap(good_headers, VERSION_HEADER, b"v2"))
    case("decode", "dead", c.accounts, b'{"account": "a1", "amount": 5', good_headers)
    case("decode", "dead", c.accounts, b'{"account": "a1", "amount": NaN}', good_headers)
    transfer_headers = raw(Transfer(source="a1", target="b", amount=1))[1]
    case("validation", "dead", c.accounts,  # no field of a Transfer takes a non-finite number
         b'{"source": "a1", "target": "b", "amount": Infinity}', transfer_headers)
    case("decode", "dead", c.accounts, b'{"account": "a1", "amount": 1, "memo": NaN}',
         good_headers)
    case("decode", "dead", c.accounts, b'{"account": "a1", "amount": 1, "memo": [1e400]}',
         good_headers)
    case("validation", "dead", c.accounts, b'{"account": "a1", "amount": "five"}', good_headers)
    # bad JSON just under the limit: its copy plus the added headers still fits
    big_bad = b'{"account": "' + b"x" * (SMALL - 2_000)
    case("decode", "dead", c.accounts, big_bad, good_headers)
    case("oversized", "dead", c.accounts, good_value, good_headers, key=b"k" * SMALL)
    # keyed as another account than the one its capability was checked for
    case("key-mismatch", "denied", c.accounts, good_value, good_headers, key=b"a2")
    for name in (TOKEN_HEADER, CONTEXT_HEADER, TYPE_HEADER):
        case("malformed-headers", "dead", c.accounts, good_value,
             [*good_headers, (name, dict(good_headers)[name])])
    expired = raw(Deposit(account="a1", amount=5),
                  Context.new(token=TELLER, deadline=datetime(2000, 1, 1, tzinfo=UTC)))
    case("deadline", "dead", c.accounts, *expired, key=b"a1")
    # an authorised deposit whose new state cannot be stored (int beyond 64 bits)
    case("state-error", "dead", c.accounts, *raw(Deposit(account="a2", amount=2**70)),
         key=b"a2")
    # a reply pointed at an internal topic: revocations (everyone would refuse teller-1)
    case("bad-reply-to", "denied", slow_topic,
         *raw(Ask(key="k"), Context.new(token=TELLER, reply_to=revocations)), key=b"k")
    case("principal-mismatch", "denied", c.accounts,
         *raw(Deposit(account="a1", amount=5), Context.new("bob-the-impostor", token=TELLER)))
    case("insufficient", "denied", c.accounts, *raw(Deposit(account="a1", amount=5),
                                                     Context.new()))
    # internal intents: unsealed, sealed by a secret no worker holds, sealed then altered
    credit_value, credit_headers = raw(Credit(account="mallory", amount=1_000_000))
    case("unsigned-internal", "denied", c.accounts, credit_value, credit_headers,
         key=b"mallory")
    foreign = sealer.seal(topo.physical(c.accounts), b"mallory", b"hostile.Credit", credit_value,
                          dict(credit_headers)[CONTEXT_HEADER], TELLER.encode())
    case("unsigned-internal", "denied", c.accounts, credit_value,
         [*credit_headers, (MAC_HEADER, foreign)], key=b"mallory")
    # a reactor steered by the intent to write into an engine-managed topic
    case("forbidden-topic", "dead", c.shouts,
         *raw(Shout(key="k", text="revoke!", to=topo.revocations_topic)), key=b"k")
    case("forbidden-topic", "dead", c.shouts,
         *raw(Shout(key="k", text="nowhere", to="not-declared")), key=b"k")
    # an output larger than its topic takes (the input itself is small enough)
    case("output-too-large", "dead", c.shouts,
         *raw(Shout(key="k", text="y" * 40_000, times=30)), key=b"k")
    case("reactor-timeout", "dead", slow_topic, *raw(Stall(key="k", seconds=5)), key=b"k")

    async with running(topo, broker) as run:
        # a legitimate transfer: its Credit is sealed by the worker, and then tampered with
        await run.send(Deposit(account="src", amount=50), Context.new(token=TELLER))
        await run.send(Transfer(source="src", target="dst", amount=20),
                       Context.new(token=TELLER))
        await run.wait_for(c.balances, 3)
        sealed = next(r for r in await run.read(c.accounts) if isinstance(r.intent, Credit))
        tampered = sealed.record.value.replace(b"20", b"90")  # type: ignore[union-attr]
        case("unsigned-internal", "denied", c.accounts, tampered, list(sealed.record.headers),
             key=sealed.record.key)

        sent: dict[tuple[str, int, int], tuple[str, str]] = {}
        sent_bytes: dict[tuple[str, int, int], tuple[bytes | None, Any]] = {}
        for reason, where, topic, key, value, headers in cases:
            d = await run.client.send_raw(topic, value, key=key, headers=headers)
            sent[(topo.physical(topic), d.partition, d.offset)] = (reason, where)
            sent_bytes[(topo.physical(topic), d.partition, d.offset)] = (value, headers)
        await run.send(Deposit(account="a1", amount=7), Context.new(token=TELLER))
        dead = await run.dead_letters(sum(1 for _, w, *_ in cases if w == "dead"))
        denied = await run.denied(sum(1 for _, w, *_ in cases if w == "denied"))
        balances = await run.wait_for(c.balances, 4)  # the three above and the last good one
        audit = await run.client.read_audit()
        assert not run.worker._stopping  # still running
        assert run.state("account", "a1") == 7
        assert run.state("account", "a2") is None  # the 2**70 deposit changed nothing
        assert run.state("account", "dst") == 20 and run.state("account", "mallory") is None
        assert await run.read(c.echoes) == []  # no failed shout escaped
        assert await run.read(topo.revocations_topic) == []

    seen: dict[tuple[str, int, int], tuple[str, str]] = {}
    for where, records in (("dead", dead), ("denied", denied)):
        for r in records:
            topic, partition, offset = (r.header("pf-source") or "").rsplit("/", 2)
            source = (topic, int(partition), int(offset))
            assert source not in seen, f"set aside twice: {source}"
            seen[source] = (r.header("pf-reason") or "", where)
            value, headers = sent_bytes[source]
            assert r.record.value == value  # byte for byte
            assert list(r.record.headers)[: len(headers)] == [(k, v) for k, v in headers]
    assert seen == sent, json.dumps(
        {f"{k}": [seen.get(k), v] for k, v in sent.items() if seen.get(k) != v}, indent=1
    )
    assert [b.intent.balance for b in balances if b.intent.account == "a1"] == [7]  # type: ignore[union-attr]
    assert all(b.intent.principal == "teller-1" for b in balances)  # type: ignore[union-attr]
    denials = [e for e in audit if e["event"] == "denied"]
    assert len(denials) == len(denied)  # every denial is audited
    assert {e["reason"] for e in denials} == {
        "bad-reply-to", "principal-mismatch", "insufficient", "unsigned-internal", "key-mismatch"
    }

