"""Accounts: deposits, withdrawals and transfers, guarded by teller / auditor / admin capabilities.

Run it:  packetflow worker topologies.orders            (broker: $PACKETFLOW_BROKER or memory://)
Demo:    python -m topologies.orders [--count N]       (embedded broker, generated traffic)

A transfer is a pair of intents: ``Transfer`` debits the source account on its partition,
then emits ``TransferCredit`` keyed by the target account, which credits it on its own.

Capabilities arrive only as signed tokens: workers trust the public keys in the keys
directory (``packetflow caps keygen`` makes one; ``packetflow caps issue --holder teller-1
--grant 'teller:account/*'`` issues a token to pass to ``packetflow send --token``).
What reactors emit for other reactors (``TransferCredit``, the ledger) is internal: workers
seal it with the worker secret (``packetflow caps secret``), so nobody can forge it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pydantic import BaseModel, Field

from packetflow import Context, Intent, Issuer, KeyPair, Topology

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


class TransferCredit(Intent, type_name="orders.TransferCredit", key="target", internal=True):
    """The second leg of a transfer, emitted by the accounts reactor: internal, so only a
    worker can send it (sealed with the worker secret); a forged one is denied."""

    transfer_id: str
    source: str
    target: str
    amount: int


class AuditBalance(
    Intent, type_name="orders.AuditBalance", key="account", requires=["read:account/{account}"]
):
    account: str


AccountIntent = Deposit | Withdraw | Transfer | TransferCredit | AuditBalance

# -- intents out (the ledger; internal: only the accounts reactor writes it) -------------


class Deposited(Intent, type_name="orders.Deposited", key="account", internal=True):
    account: str
    amount: int
    balance: int


class Withdrawn(Intent, type_name="orders.Withdrawn", key="account", internal=True):
    account: str
    amount: int
    balance: int


class WithdrawalRejected(
    Intent, type_name="orders.WithdrawalRejected", key="account", internal=True
):
    account: str
    amount: int
    balance: int
    reason: str


class TransferCompleted(Intent, type_name="orders.TransferCompleted", key="target", internal=True):
    transfer_id: str
    source: str
    target: str
    amount: int


class BalanceReported(Intent, type_name="orders.BalanceReported", key="account", internal=True):
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

TELLER = ("teller-1", ["teller:account/*"])  # deposits, withdraws, transfers, reads anywhere
AUDITOR = ("auditor-1", ["auditor:account/*"])  # reads anywhere, moves nothing
INTERN = ("intern-1", ["teller:account/acct-0001"])  # delegated by the teller: one account
MALLORY = ("mallory", ["admin:**"])  # signs her own token with a key nobody trusts


def demo_tokens(issuer: Issuer) -> dict[str, str]:
    """The tokens the generated traffic uses: teller and auditor issued by ``issuer``, the
    intern's delegated from the teller's, and mallory's forged with an untrusted key."""
    teller = issuer.issue(*TELLER, ttl="8h")
    rogue = Issuer(KeyPair.generate("rogue"), name="mallory", clock=issuer.clock)
    return {
        "teller-1": teller,
        "auditor-1": issuer.issue(*AUDITOR, ttl="8h"),
        "intern-1": issuer.delegate(teller, *INTERN, ttl="1h"),
        "mallory": rogue.issue(*MALLORY, ttl="8h"),
    }


def generate_traffic(
    count: int, *, issuer: Issuer, accounts: int = 50, seed: int = 7
) -> Iterator[tuple[Intent, Context]]:
    """Realistic traffic: tellers move money, auditors read, and some overstep: an auditor
    withdrawing, an intern (delegated one account) touching another, mallory's forged token."""
    rng = random.Random(seed)
    tokens = demo_tokens(issuer)
    names = [f"acct-{i:04d}" for i in range(accounts)]
    for n in range(count):
        roll = rng.random()
        acct = rng.choice(names)
        who = "teller-1"
        intent: Intent
        if n < accounts:
            intent = Deposit(account=names[n], amount=1000)
        elif roll < 0.40:
            intent = Deposit(account=acct, amount=rng.randint(1, 500))
        elif roll < 0.72:
            intent = Withdraw(account=acct, amount=rng.randint(1, 800))
        elif roll < 0.88:
            target = rng.choice([x for x in names if x != acct])
            intent = Transfer(
                transfer_id=f"t{n}", source=acct, target=target, amount=rng.randint(1, 600)
            )
        elif roll < 0.94:
            who = "auditor-1"
            intent = AuditBalance(account=acct)
        elif roll < 0.96:  # the intern works on the one account delegated to them
            who = "intern-1"
            intent = Deposit(account="acct-0001", amount=rng.randint(1, 100))
        elif roll < 0.975:  # ... and tries another one: denied
            who = "intern-1"
            intent = Withdraw(account=_other(names, rng), amount=5)
        elif roll < 0.99:  # an auditor trying to move money: denied, never reaches the reactor
            who = "auditor-1"
            intent = Withdraw(account=acct, amount=10)
        else:  # a forged token claiming admin: denied (unknown key)
            who = "mallory"
            intent = Withdraw(account=acct, amount=999)
        yield intent, Context.new(who, token=tokens[who])


def _other(names: list[str], rng: random.Random) -> str:
    """Any account but the intern's own (acct-0001)."""
    return rng.choice([x for x in names if x != "acct-0001"] or names)


if __name__ == "__main__":
    from packetflow.cli.demo import demo_main

    demo_main(topology, generate_traffic, show_state={"accounts": "balance"})
