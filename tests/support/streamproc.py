"""The topology the stream process tests run as ``packetflow worker tests/support/streamproc.py``.

``PF_TEST_GUARANTEE`` picks at-least-once or exactly-once; ``PF_TEST_WINDOW`` the window
(``count``: every 10 additions of an account; ``tumbling``: 2-second windows on the
``at`` field, 0.5 s grace). Every addition carries a unique ``seq``, so the tests can see
which inputs each output holds: each must be there exactly once.
"""

from __future__ import annotations

import os

from packetflow import Context, Intent, Topology
from packetflow.streams import Count, Tumbling, WindowResult, agg, window

topology = Topology(
    "streamproc",
    allow_unsigned=True,  # the test inputs carry plain capabilities
    processing_guarantee=os.environ.get("PF_TEST_GUARANTEE", "at_least_once"),
)


class Add(Intent, type_name="streamproc.Add", key="account"):
    account: str
    seq: int
    amount: int
    at: float  # event time, seconds since the epoch


class Balance(Intent, type_name="streamproc.Balance", key="account"):
    account: str
    seq: int
    balance: int


class Collected(Intent, type_name="streamproc.Collected", key="account"):
    account: str
    start: float
    seqs: list[int]
    total: int


topology.route(Balance, "balances")
topology.route(Collected, "windows")


@topology.reactor(Add, topic="adds", state=int, public=True)
def balance(add: Add, ctx: Context, total: int) -> tuple[int, Balance]:
    total += add.amount
    return total, Balance(account=add.account, seq=add.seq, balance=total)


_kind = os.environ.get("PF_TEST_WINDOW", "count")


@window(
    topology,
    Add,
    topic="adds",
    every=Count(10) if _kind == "count" else Tumbling(2),
    aggregate=agg.collect("seq"),
    time="at",
    grace=0.5,
    idle=0.5,
    public=True,
)
def windows(result: WindowResult, ctx: Context) -> Collected:
    seqs: list[int] = result.value
    return Collected(
        account=result.key or "",
        start=result.start.timestamp(),
        seqs=seqs,
        total=len(seqs),
    )
