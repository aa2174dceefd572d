"""The benchmark's intents, as PacketFlow declares them (the input is encoded with these).

Every workload reads :class:`Deposit` records in PacketFlow's wire format and writes one
derived intent per input: :class:`DepositAccepted` (W1) or :class:`BalanceChanged` (W2).
``sent_us`` is the producer's wall clock in microseconds when the input was sent; outputs
carry it on so the harness can measure end-to-end latency when it sees them.
"""

from __future__ import annotations

from pydantic import Field

from benchmarks.wire import BALANCE_CHANGED, DEPOSIT, DEPOSIT_ACCEPTED, HELD, PRINCIPAL
from packetflow import Context, Intent
from packetflow.engine.codec import encode


class Deposit(Intent, type_name=DEPOSIT, key="account", requires=["deposit:account/{account}"]):
    account: str
    amount: int = Field(gt=0)
    sent_us: int


class DepositAccepted(Intent, type_name=DEPOSIT_ACCEPTED, key="account"):
    account: str
    amount: int
    sent_us: int


class BalanceChanged(Intent, type_name=BALANCE_CHANGED, key="account"):
    account: str
    amount: int
    balance: int
    sent_us: int


def encode_deposit(
    account: str, amount: int, sent_us: int
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """One input record's value and headers, exactly as PacketFlow writes them."""
    return encode(
        Deposit(account=account, amount=amount, sent_us=sent_us), Context.new(PRINCIPAL, HELD)
    )
