"""The benchmark's intents, as PacketFlow declares them (the input is encoded with these).

Every workload reads :class:`Deposit` records in PacketFlow's wire format. W1 and W2 write
one derived intent per input: :class:`DepositAccepted` (W1) or :class:`BalanceChanged` (W2).
``sent_us`` is the producer's wall clock in microseconds when the input was sent; those
outputs carry it on so the harness can measure end-to-end latency when it sees them. W3
writes one :class:`WindowTotal` per (account, 10-second window of ``event_time``) when the
window closes: how many deposits fell into it and what they add up to. ``event_time`` (epoch
seconds) is set by the input's producer; W1 and W2 carry it without looking at it.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field

from benchmarks.wire import (
    BALANCE_CHANGED,
    DEPOSIT,
    DEPOSIT_ACCEPTED,
    HELD,
    PRINCIPAL,
    WINDOW_TOTAL,
)
from packetflow import Capability, Context, Intent, KeyPair, issue_token
from packetflow.engine.codec import CAPABILITIES_HEADER, encode, encode_capabilities

# The benchmark's own signing key (fixed, so every process of a run derives it: it signs
# nothing but this benchmark's input), and the one token every input carries, as a
# deployment's senders do. The PacketFlow contestant checks the token (the path users run);
# the hand-written contestants check the plain ``pf-capabilities`` the inputs also carry.
BENCH_KEY = KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(32))), kid="bench")
TOKEN = issue_token(PRINCIPAL, HELD, key=BENCH_KEY, ttl="7d")
_HELD_HEADER = encode_capabilities(tuple(Capability.parse(c) for c in HELD))


class Deposit(Intent, type_name=DEPOSIT, key="account", requires=["deposit:account/{account}"]):
    account: str
    amount: int = Field(gt=0)
    event_time: float  # seconds since the epoch; before sent_us, which loadgen rewrites last
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


class WindowTotal(Intent, type_name=WINDOW_TOTAL, key="account"):
    account: str
    start: int  # the window's start, epoch seconds: it covers [start, start + 10)
    count: int  # deposits in it
    total: int  # their amounts' sum


def encode_deposit(
    account: str, amount: int, sent_us: int, event_time: float
) -> tuple[bytes, list[tuple[str, bytes]]]:
    """One input record's value and headers, as PacketFlow writes them with the bench token,
    plus the plain capabilities the hand-written contestants check."""
    value, headers = encode(
        Deposit(account=account, amount=amount, event_time=event_time, sent_us=sent_us),
        Context.new(PRINCIPAL, token=TOKEN),
    )
    headers.append((CAPABILITIES_HEADER, _HELD_HEADER))
    return value, headers
