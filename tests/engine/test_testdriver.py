"""The TestDriver user API (synchronous, in memory, virtual time) and the orders example."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from packetflow import Context, Intent, TestDriver, Topology, call, emit, retry
from topologies import orders
from topologies.orders import (
    Account,
    AuditBalance,
    BalanceReported,
    Deposit,
    Deposited,
    Statement,
    Transfer,
    TransferCompleted,
    TransferCredit,
    Withdraw,
    WithdrawalRejected,
    Withdrawn,
)

# -- a small topology of our own ---------------------------------------------------------


class Put(Intent, type_name="kv.Put", key="key", requires=["write:kv/{key}"]):
    key: str
    value: str


class Charge(Intent, type_name="kv.Charge", key="key"):
    key: str
    failures: int  # how many attempts fail before one succeeds


class Stored(Intent, type_name="kv.Stored", key="key"):
    key: str
    value: str
    version: int


class Entry(BaseModel):
    value: str = ""
    version: int = 0


def build(*, allow_unsigned: bool = True) -> tuple[Topology, list[Any]]:
    """The kv topology; it opts in to plain capabilities so these tests need no tokens."""
    topo = Topology(
        "kv",
        capabilities={"owner": ["write", "read"]},
        partitions=2,
        allow_unsigned=allow_unsigned,
    )
    topo.route(Stored, "changes")
    attempts: list[Any] = []

    @topo.reactor(Put, topic="puts", state=Entry)
    def store(intent: Put, ctx: Context, state: Entry) -> tuple[Entry, Stored]:
        new = Entry(value=intent.value, version=state.version + 1)
        return new, Stored(key=intent.key, value=new.value, version=new.version)

    @topo.reactor(Charge, topic="charges", state=0, public=True)
    def charge(intent: Charge, ctx: Context, state: int) -> tuple[int, Any]:
        def attempt() -> str:
            attempts.append(intent.key)
            if attempts.count(intent.key) <= intent.failures:
                raise ConnectionError(f"attempt {attempts.count(intent.key)} failed")
            return "charged"

        effect = retry(call(attempt), attempts=3, base_delay=10.0, factor=2.0, max_delay=60.0)
        return state + 1, effect >> emit(Stored(key=intent.key, value="charged", version=0))

    return topo, attempts


@pytest.fixture
def kv() -> Iterator[tuple[TestDriver, list[Any]]]:
    topo, attempts = build()
    with TestDriver(topo) as driver:
        yield driver, attempts


def test_send_with_capabilities_updates_state_and_emits(kv: tuple[TestDriver, list[Any]]) -> None:
    driver, _ = kv
    driver.send(Put(key="a", value="1"), principal="ann", capabilities=["owner:kv/*"])
    driver.send(Put(key="a", value="2"), capabilities=["write:kv/a"])
    driver.send(Put(key="b", value="x"), capabilities=["owner:kv/b"])

    assert driver.state("store", "a") == Entry(value="2", version=2)
    assert driver.state("store", "b") == Entry(value="x", version=1)
    assert driver.state("store", "c") is None
    assert driver.states("store") == {
        "a": Entry(value="2", version=2),
        "b": Entry(value="x", version=1),
    }
    assert sorted(driver.emitted("changes"), key=lambda s: (s.key, s.version)) == [
        Stored(key="a", value="1", version=1),
        Stored(key="a", value="2", version=2),
        Stored(key="b", value="x", version=1),
    ]
    (first, *_) = [
        r for r in driver.records("changes") if r.intent == Stored(key="a", value="1", version=1)
    ]
    assert first.context is not None
    assert first.context.principal == "ann"
    assert first.context.trace == ("store",)
    assert driver.denied() == [] and driver.dead_letters() == []
    assert driver.metrics["processed"] == {"store": 3}


def test_denied(kv: tuple[TestDriver, list[Any]]) -> None:
    driver, _ = kv
    driver.send(Put(key="a", value="1"), capabilities=["owner:kv/a"])
    driver.send(Put(key="a", value="evil"), principal="eve", capabilities=["read:kv/*"])
    driver.send(Put(key="b", value="evil"), principal="eve", capabilities=["owner:kv/a"])

    denied = sorted(driver.denied(), key=lambda d: d.header("pf-missing") or "")
    assert [(d.header("pf-reason"), d.header("pf-missing"), d.intent) for d in denied] == [
        ("insufficient", "write:kv/a", Put(key="a", value="evil")),
        ("insufficient", "write:kv/b", Put(key="b", value="evil")),
    ]
    assert denied[0].header("pf-error") == "eve lacks write:kv/a for kv.Put"
    assert driver.state("store", "a") == Entry(value="1", version=1)
    assert driver.state("store", "b") is None
    assert len(driver.emitted("changes")) == 1
    assert driver.metrics["denied"] == {"kv.Put": 2}


def test_plain_capabilities_need_the_topology_to_opt_in() -> None:
    topo, _ = build(allow_unsigned=False)
    with TestDriver(topo) as driver:
        driver.send(Put(key="a", value="1"), principal="ann", capabilities=["owner:kv/*"])
        driver.send(Put(key="a", value="2"), token=driver.issue("ann", ["owner:kv/*"]))

        (denied,) = driver.denied()
        assert denied.intent == Put(key="a", value="1")
        assert denied.header("pf-reason") == "insufficient"
        assert denied.header("pf-missing") == "write:kv/a"
        assert "plain capabilities are not accepted" in (denied.header("pf-error") or "")
        assert driver.state("store", "a") == Entry(value="2", version=1)


def test_send_raw_and_dead_letters(kv: tuple[TestDriver, list[Any]]) -> None:
    driver, _ = kv
    driver.send_raw("puts", b"{oops", key=b"a", headers=[("pf-type", b"kv.Put")])
    driver.send_raw("puts", b'{"key": "a"}', key=b"a", headers=[("pf-type", b"kv.Put")])
    driver.send_raw(
        "puts", b'{"key": "a", "value": "v"}', key=b"a", headers=[("pf-type", b"kv.Nope")]
    )

    dead = driver.dead_letters()
    assert [d.header("pf-reason") for d in dead] == ["decode", "validation", "unknown-type"]
    assert [d.record.value for d in dead] == [
        b"{oops",
        b'{"key": "a"}',
        b'{"key": "a", "value": "v"}',
    ]
    assert all(d.record.key == b"a" for d in dead)
    assert "value: Field required" in (dead[1].header("pf-error") or "")
    assert driver.states("store") == {}

    # a raw record without a context has no capabilities, so a valid one is denied
    driver.send_raw(
        "puts", b'{"key": "a", "value": "v"}', key=b"a", headers=[("pf-type", b"kv.Put")]
    )
    (denied,) = driver.denied()
    assert denied.header("pf-missing") == "write:kv/a"


def test_retry_backoff_runs_on_virtual_time(kv: tuple[TestDriver, list[Any]]) -> None:
    driver, attempts = kv
    start = driver.clock.time()
    wall = time.monotonic()

    driver.send(Charge(key="c1", failures=2))  # fails twice: waits 10s then 20s

    assert time.monotonic() - wall < 2.0  # no real waiting
    assert driver.clock.time() - start == pytest.approx(30.0)
    assert attempts == ["c1", "c1", "c1"]
    assert driver.state("charge", "c1") == 1
    assert driver.emitted("changes") == [Stored(key="c1", value="charged", version=0)]

    driver.send(Charge(key="c2", failures=5))  # never succeeds in 3 attempts: 10s + 20s more
    assert driver.clock.time() - start == pytest.approx(60.0)
    assert attempts.count("c2") == 3
    (dead,) = driver.dead_letters()
    assert dead.header("pf-reason") == "reactor-error"
    assert dead.header("pf-reactor") == "charge"
    assert dead.header("pf-error") == "ConnectionError: attempt 3 failed"
    assert driver.state("charge", "c2") is None  # not committed
    assert len(driver.emitted("changes")) == 1


def test_advance_time_moves_the_clock_deadlines_and_timestamps(
    kv: tuple[TestDriver, list[Any]],
) -> None:
    driver, _ = kv
    t0 = driver.clock.time()
    deadline = driver.clock.now() + timedelta(seconds=30)
    caps = ["owner:kv/*"]

    driver.send(Put(key="a", value="early"), context=Context.new("ann", caps, deadline=deadline))
    driver.advance_time(60)
    assert driver.clock.time() == t0 + 60
    driver.send(Put(key="a", value="late"), context=Context.new("ann", caps, deadline=deadline))
    driver.send(Put(key="a", value="fresh"), capabilities=caps)

    assert driver.state("store", "a") == Entry(value="fresh", version=2)
    (dead,) = driver.dead_letters()
    assert dead.header("pf-reason") == "deadline"
    assert dead.intent == Put(key="a", value="late")
    stamps = [r.record.timestamp for r in driver.records("changes")]
    assert stamps == [int(t0 * 1000), int((t0 + 60) * 1000)]
    with pytest.raises(ValueError):
        driver.advance_time(-1)


def test_start_time() -> None:
    topo, _ = build()
    start = datetime(2030, 6, 1, tzinfo=UTC)
    with TestDriver(topo, start_time=start) as driver:
        assert driver.clock.now() == start
        driver.send(Put(key="a", value="v"), capabilities=["write:kv/a"])
        (record,) = driver.records("changes")
        assert record.record.timestamp == int(start.timestamp() * 1000)


# -- topologies/orders.py ----------------------------------------------------------------

TELLER: dict[str, str] = {}
AUDITOR: dict[str, str] = {}


@pytest.fixture
def bank() -> Iterator[TestDriver]:
    """The orders topology (signed tokens only) with a teller's and an auditor's token."""
    with TestDriver(orders.topology) as driver:
        TELLER["token"] = driver.issue("teller-1", ["teller:account/*"])
        AUDITOR["token"] = driver.issue("auditor-1", ["auditor:account/*"])
        yield driver


def ledger(driver: TestDriver) -> list[Intent]:
    return driver.emitted("ledger")


def test_teller_deposits_and_withdraws(bank: TestDriver) -> None:
    bank.send(Deposit(account="a1", amount=100), **TELLER)
    bank.send(Withdraw(account="a1", amount=30), **TELLER)

    assert bank.state("accounts", "a1") == Account(balance=70, operations=2)
    assert ledger(bank) == [
        Deposited(account="a1", amount=100, balance=100),
        Withdrawn(account="a1", amount=30, balance=70),
    ]
    assert bank.state("statements", "a1") == Statement(entries=2, rejected=0)


def test_overdraft_is_rejected_and_keeps_the_balance(bank: TestDriver) -> None:
    bank.send(Deposit(account="a1", amount=50), **TELLER)
    bank.send(Withdraw(account="a1", amount=80), **TELLER)

    assert bank.state("accounts", "a1") == Account(balance=50, operations=1)
    assert ledger(bank)[-1] == WithdrawalRejected(
        account="a1", amount=80, balance=50, reason="insufficient funds"
    )
    assert bank.state("statements", "a1") == Statement(entries=2, rejected=1)
    assert bank.dead_letters() == [] and bank.denied() == []


def test_transfer_moves_money_between_accounts(bank: TestDriver) -> None:
    bank.send(Deposit(account="src", amount=100), **TELLER)
    bank.send(Deposit(account="dst", amount=5), **TELLER)
    bank.send(Transfer(transfer_id="t1", source="src", target="dst", amount=40), **TELLER)

    assert bank.state("accounts", "src") == Account(balance=60, operations=2)
    assert bank.state("accounts", "dst") == Account(balance=45, operations=2)
    credits = [i for i in bank.emitted("accounts") if isinstance(i, TransferCredit)]
    assert credits == [TransferCredit(transfer_id="t1", source="src", target="dst", amount=40)]
    assert ledger(bank)[-1] == TransferCompleted(
        transfer_id="t1", source="src", target="dst", amount=40
    )
    # the credit leg was keyed by the target account, so it ran on the target's partition
    (credit,) = [r for r in bank.records("accounts") if isinstance(r.intent, TransferCredit)]
    assert credit.record.key == b"dst"
    assert credit.context is not None and credit.context.trace == ("accounts",)

    # a transfer the source cannot cover moves nothing
    bank.send(Transfer(transfer_id="t2", source="src", target="dst", amount=500), **TELLER)
    assert bank.state("accounts", "src").balance == 60
    assert bank.state("accounts", "dst").balance == 45
    assert ledger(bank)[-1] == WithdrawalRejected(
        account="src", amount=500, balance=60, reason="insufficient funds"
    )


def test_auditor_reads_but_cannot_withdraw(bank: TestDriver) -> None:
    bank.send(Deposit(account="a1", amount=100), **TELLER)
    bank.send(AuditBalance(account="a1"), **AUDITOR)
    bank.send(Withdraw(account="a1", amount=10), **AUDITOR)

    assert ledger(bank)[-1] == BalanceReported(account="a1", balance=100, principal="auditor-1")
    (denied,) = bank.denied()
    assert denied.intent == Withdraw(account="a1", amount=10)
    assert denied.header("pf-reason") == "insufficient"
    assert denied.header("pf-missing") == "withdraw:account/a1"
    assert bank.state("accounts", "a1") == Account(balance=100, operations=1)
    assert not any(isinstance(i, Withdrawn) for i in ledger(bank))


def test_a_delegated_token_covers_its_one_account_only(bank: TestDriver) -> None:
    intern = bank.delegate(TELLER["token"], "intern-1", ["teller:account/a1"], ttl="10m")
    bank.send(Deposit(account="a1", amount=100), token=intern)
    bank.send(Withdraw(account="a1", amount=40), token=intern)
    bank.send(Deposit(account="a2", amount=5), token=intern)

    assert bank.state("accounts", "a1") == Account(balance=60, operations=2)
    assert bank.state("accounts", "a2") is None
    (denied,) = bank.denied()
    assert denied.header("pf-missing") == "deposit:account/a2"
    assert denied.header("pf-error") == "intern-1 lacks deposit:account/a2 for orders.Deposit"

    bank.advance_time(601)  # the delegation was for ten minutes
    bank.send(Deposit(account="a1", amount=1), token=intern)
    assert bank.denied()[-1].header("pf-reason") == "expired"
    bank.send(Deposit(account="a1", amount=1), **TELLER)  # the teller's own token still works
    assert bank.state("accounts", "a1").balance == 61


def test_plain_capabilities_are_refused_by_orders(bank: TestDriver) -> None:
    bank.send(Deposit(account="a1", amount=100), principal="teller-1",
              capabilities=["teller:account/*"])
    (denied,) = bank.denied()
    assert denied.header("pf-reason") == "insufficient"
    assert bank.state("accounts", "a1") is None


def test_orders_rejects_invalid_amounts(bank: TestDriver) -> None:
    bank.send_raw(
        "accounts",
        b'{"account": "a1", "amount": 0}',
        key=b"a1",
        headers=[("pf-type", b"orders.Deposit")],
    )
    (dead,) = bank.dead_letters()
    assert dead.header("pf-reason") == "validation"
    assert bank.state("accounts", "a1") is None


def test_generated_traffic_conserves_money() -> None:
    with TestDriver(orders.topology) as driver:
        for intent, ctx in orders.generate_traffic(400, accounts=10, issuer=driver.issuer):
            driver.send(intent, context=ctx)
        balances = {k: v.balance for k, v in driver.states("accounts").items()}
        deposits = sum(i.amount for i in driver.emitted("ledger") if isinstance(i, Deposited))
        withdrawn = sum(i.amount for i in driver.emitted("ledger") if isinstance(i, Withdrawn))
        assert sum(balances.values()) == deposits - withdrawn  # transfers move, never create
        assert all(b >= 0 for b in balances.values())
        assert driver.dead_letters() == []
        denied = driver.denied()
        assert {d.header("pf-missing") for d in denied if d.header("pf-missing")} <= {
            f"withdraw:account/acct-{i:04d}" for i in range(10)
        }
        by_reason = {(d.context.principal, d.header("pf-reason")) for d in denied if d.context}
        assert by_reason == {
            ("auditor-1", "insufficient"),  # an auditor withdrawing
            ("intern-1", "insufficient"),  # the intern touching an account not delegated
            ("mallory", "unknown-key"),  # a forged token
        }
        # the intern's own account got the intern's deposits; mallory never reached a reactor
        assert not any(
            r.context is not None and r.context.principal == "mallory"
            for r in driver.records("ledger")
        )
