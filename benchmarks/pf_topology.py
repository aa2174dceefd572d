"""The PacketFlow contestant: the workload as a topology, run by ``packetflow worker``.

``BENCH_WORKLOAD`` picks the reactor (W1 stateless ``accept``, W2 stateful ``balance``,
state ``int`` per account in a changelog-backed store) or, for W3, the window
``per_account``: ``packetflow.streams.window``, per-account 10-second tumbling windows on the
deposits' ``event_time`` with 2 s of grace, summing ``amount`` (the count comes with the
result), each window's ``WindowTotal`` emitted once, when the partition's watermark passes
its end + grace; ``BENCH_INPUT`` / ``BENCH_OUTPUT``
name the topics and ``BENCH_GROUP`` the topology (so its group, changelog, dead-letter and
denied topics are unique per run). Decoding, the capability check (``Deposit`` requires
``deposit:account/{account}``; inputs carry a token signed by the bench key granting
``teller:account/*``) and the derived context are the engine's. ``BENCH_GUARANTEE``
(default at_least_once) is the topology's processing guarantee; the disk-store variants get
``PACKETFLOW_STATE_DIR`` from the harness.

    BENCH_WORKLOAD=W2 packetflow worker benchmarks.pf_topology --broker kafka://...
"""

from __future__ import annotations

import os

from benchmarks.config import GRACE_SECONDS, WINDOW_SECONDS
from benchmarks.contestants.common import ContestantEnv, FirstRecord
from benchmarks.intents import BENCH_KEY, BalanceChanged, Deposit, DepositAccepted, WindowTotal
from benchmarks.wire import HIERARCHY
from packetflow import Context, Security, Topology
from packetflow.streams import Tumbling, WindowResult, agg, window

env = ContestantEnv.from_env()
first = FirstRecord(env.marker)

# The inputs carry the bench's signed token: the worker verifies it (once: one token for
# every input, as a deployment's senders share theirs) and checks its grants per record.
topology = Topology(
    env.group,
    capabilities=HIERARCHY,
    security=Security(trusted_keys=[BENCH_KEY]),
    processing_guarantee=os.environ.get("BENCH_GUARANTEE", "at_least_once"),
)
topology.route(DepositAccepted, env.output)
topology.route(BalanceChanged, env.output)
topology.route(WindowTotal, env.output)

if env.workload == "W1":

    @topology.reactor(Deposit, topic=env.input, emits=[DepositAccepted])
    def accept(deposit: Deposit, ctx: Context) -> list[DepositAccepted]:
        """W1: authorised deposits become DepositAccepted."""
        if first.pending:
            first.mark()
        return [
            DepositAccepted(account=deposit.account, amount=deposit.amount, sent_us=deposit.sent_us)
        ]

elif env.workload == "W2":

    @topology.reactor(Deposit, topic=env.input, state=int, emits=[BalanceChanged])
    def balance(deposit: Deposit, ctx: Context, total: int) -> tuple[int, list[BalanceChanged]]:
        """W2: keeps each account's running balance and reports every change."""
        if first.pending:
            first.mark()
        total += deposit.amount
        return total, [
            BalanceChanged(
                account=deposit.account,
                amount=deposit.amount,
                balance=total,
                sent_us=deposit.sent_us,
            )
        ]

elif env.workload == "W3":

    def amount(deposit: Deposit) -> int:
        """What the window sums (and where the first record is noted)."""
        if first.pending:
            first.mark()
        return deposit.amount

    @window(
        topology,
        Deposit,
        topic=env.input,
        every=Tumbling(WINDOW_SECONDS),
        aggregate=agg.sum(amount),
        time="event_time",
        grace=GRACE_SECONDS,
        emits=[WindowTotal],
    )
    def per_account(result: WindowResult, ctx: Context) -> WindowTotal:
        """W3: each account's deposits per 10 s of event time, once the window closes."""
        assert result.key is not None
        return WindowTotal(
            account=result.key,
            start=int(result.start.timestamp()),
            count=result.count,
            total=result.value,
        )

else:
    raise SystemExit(f"pf_topology: unknown BENCH_WORKLOAD {env.workload!r} (W1, W2 or W3)")
