"""Accounts: deposits, withdrawals and transfers, guarded by teller / auditor / admin capabilities.

Run it:  packetflow worker topologies.orders            (broker: $PACKETFLOW_BROKER or memory://)
Demo:    python -m topologies.orders [--count N]       (embedded broker, generated traffic)

A transfer is a pair of intents: ``Transfer`` debits the source account on its partition,
then emits ``TransferCredit`` keyed by the target account, which credits it on its own.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pydantic import BaseModel, Field

from packetflow import Context, Intent, Topology

topology = Topology(
    "orders",
    capabilities={
        "admin": ["teller", "auditor"],
        "teller": ["deposit", "withdraw", "transfer", "read"],
        "auditor": ["read"],
    },
)

# -- intents in --------------------------------------------------------------------------


class Deposit(
    Intent, type_name="orders.Deposit", key="account", requires=["deposit:account/{account}"]
):
    account: str
    amount: int = Field(gt=0)


class Withdraw(
    Intent, type_name="orders.Withdraw", key="account", requires=["withdraw:account/{account}"]
):
    account: str
    amount: int = Field(gt=0)


class Transfer(
    Intent, type_name="orders.Transfer", key="source", requires=["transfer:account/{source}"]
):
    transfer_id: str
    source: str
    target: str
    amount: int = Field(gt=0)


class TransferCredit(Intent, type_name="orders.TransferCredit", key="target"):
    """The second leg of a transfer; emitted by the engine on the sender's behalf."""

    transfer_id: str
    source: str
    target: str
    amount: int


class AuditBalance(
    Intent, type_name="orders.AuditBalance", key="account", requires=["read:account/{account}"]
):
    account: str


AccountIntent = Deposit | Withdraw | Transfer | TransferCredit | AuditBalance

# -- intents out (the ledger) ------------------------------------------------------------


class Deposited(Intent, type_name="orders.Deposited", key="account"):
    account: str
    amount: int
    balance: int


class Withdrawn(Intent, type_name="orders.Withdrawn", key="account"):
    account: str
    amount: int
    balance: int


class WithdrawalRejected(Intent, type_name="orders.WithdrawalRejected", key="account"):
    account: str
    amount: int
    balance: int
    reason: str


class TransferCompleted(Intent, type_name="orders.TransferCompleted", key="target"):
    transfer_id: str
    source: str
    target: str
    amount: int


class BalanceReported(Intent, type_name="orders.BalanceReported", key="account"):
    account: str
    balance: int
    principal: str | None


LedgerEntry = Deposited | Withdrawn | WithdrawalRejected | TransferCompleted | BalanceReported

topology.route(TransferCredit, "accounts")
for _entry in (Deposited, Withdrawn, WithdrawalRejected, TransferCompleted, BalanceReported):
    topology.route(_entry, "ledger")

# -- reactors ----------------------------------------------------------------------------


class Account(BaseModel):
    balance: int = 0
    operations: int = 0


@topology.reactor(
    AccountIntent,
    topic="accounts",
    state=Account,
    emits=[
        TransferCredit,
        Deposited,
        Withdrawn,
        WithdrawalRejected,
        TransferCompleted,
        BalanceReported,
    ],
)
def accounts(intent: AccountIntent, ctx: Context, state: Account) -> tuple[Account, list[Intent]]:
    """Keeps each account's balance; refuses withdrawals and transfers it cannot cover."""
    match intent:
        case Deposit(account=acct, amount=amount) | TransferCredit(target=acct, amount=amount):
            new = Account(balance=state.balance + amount, operations=state.operations + 1)
            if isinstance(intent, TransferCredit):
                return new, [TransferCompleted(**intent.model_dump())]
            return new, [Deposited(account=acct, amount=amount, balance=new.balance)]
        case Withdraw(account=acct, amount=amount) | Transfer(source=acct, amount=amount):
            if amount > state.balance:
                return state, [
                    WithdrawalRejected(
                        account=acct,
                        amount=amount,
                        balance=state.balance,
                        reason="insufficient funds",
                    )
                ]
            new = Account(balance=state.balance - amount, operations=state.operations + 1)
            if isinstance(intent, Transfer):
                return new, [TransferCredit(**intent.model_dump())]
            return new, [Withdrawn(account=acct, amount=amount, balance=new.balance)]
        case AuditBalance(account=acct):
            return state, [
                BalanceReported(account=acct, balance=state.balance, principal=ctx.principal)
            ]
    raise TypeError(f"unexpected intent {intent!r}")  # pragma: no cover - the union is closed


class Statement(BaseModel):
    entries: int = 0
    rejected: int = 0


@topology.reactor(LedgerEntry, topic="ledger", state=Statement)
def statements(intent: LedgerEntry, ctx: Context, state: Statement) -> tuple[Statement, None]:
    """Counts ledger entries per account, the raw material of monthly statements."""
    rejected = state.rejected + isinstance(intent, WithdrawalRejected)
    return Statement(entries=state.entries + 1, rejected=rejected), None


# -- traffic -----------------------------------------------------------------------------

TELLER = ("teller-1", ("teller:account/*",))
AUDITOR = ("auditor-1", ("auditor:account/*",))


def generate_traffic(
    count: int, *, accounts: int = 50, seed: int = 7
) -> Iterator[tuple[Intent, Context]]:
    """Realistic traffic: tellers move money, auditors read, an auditor sometimes oversteps."""
    rng = random.Random(seed)
    names = [f"acct-{i:04d}" for i in range(accounts)]
    for n in range(count):
        roll = rng.random()
        acct = rng.choice(names)
        principal, caps = TELLER
        intent: Intent
        if n < accounts:
            intent = Deposit(account=names[n], amount=1000)
        elif roll < 0.40:
            intent = Deposit(account=acct, amount=rng.randint(1, 500))
        elif roll < 0.75:
            intent = Withdraw(account=acct, amount=rng.randint(1, 800))
        elif roll < 0.92:
            target = rng.choice([x for x in names if x != acct])
            intent = Transfer(
                transfer_id=f"t{n}", source=acct, target=target, amount=rng.randint(1, 600)
            )
        elif roll < 0.98:
            principal, caps = AUDITOR
            intent = AuditBalance(account=acct)
        else:  # an auditor trying to move money: denied, never reaches the reactor
            principal, caps = AUDITOR
            intent = Withdraw(account=acct, amount=10)
        yield intent, Context.new(principal, caps)


if __name__ == "__main__":
    from packetflow.cli.demo import demo_main

    demo_main(topology, generate_traffic, show_state={"accounts": "balance"})
