"""The PacketFlow contestant: the workload as a topology, run by ``packetflow worker``.

``BENCH_WORKLOAD`` picks the reactor (W1 stateless ``accept``, W2 stateful ``balance``,
state ``int`` per account in a changelog-backed store); ``BENCH_INPUT`` / ``BENCH_OUTPUT``
name the topics and ``BENCH_GROUP`` the topology (so its group, changelog, dead-letter and
denied topics are unique per run). Decoding, the capability check (``Deposit`` requires
``deposit:account/{account}``; inputs hold ``teller:account/*``) and the derived context
are the engine's.

    BENCH_WORKLOAD=W2 packetflow worker benchmarks.pf_topology --broker kafka://...
"""

from __future__ import annotations

from benchmarks.contestants.common import ContestantEnv, FirstRecord
from benchmarks.intents import BalanceChanged, Deposit, DepositAccepted
from benchmarks.wire import HIERARCHY
from packetflow import Context, Topology

env = ContestantEnv.from_env()
first = FirstRecord(env.marker)

# The inputs carry plain capabilities (``pf-capabilities``), which is what the hand-written
# contestants check too; a topology accepts them only when it says so.
topology = Topology(env.group, capabilities=HIERARCHY, allow_unsigned=True)
topology.route(DepositAccepted, env.output)
topology.route(BalanceChanged, env.output)

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

else:
    raise SystemExit(f"pf_topology: unknown BENCH_WORKLOAD {env.workload!r} (W1 or W2)")
