"""The workloads.

Adding a workload means: an entry here; the reactor (or window) in ``pf_topology``
(selected by ``BENCH_WORKLOAD``); the same work by hand in ``contestants/raw.py`` and
``contestants/faust_app.py``; its output check in ``verify``. The harness runs every
workload the same way (pre-produced input, throughput, then latency at half the max), but
windowed ones: they end their input with end-of-input markers and have no latency run
(see ``harness``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str
    title: str


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "stateless: decode, check capability, emit DepositAccepted"),
    "W2": Workload("W2", "stateful: running balance per account (changelog), emit BalanceChanged"),
    "W3": Workload(
        "W3",
        "windowed: per-account 10-second tumbling count and sum on event time, "
        "emit one WindowTotal per (account, window) when it closes",
    ),
}

WINDOWED = frozenset({"W3"})  # end-of-input markers, no latency run

STATE_RUN = "state"  # W2 with many distinct accounts: worker memory
