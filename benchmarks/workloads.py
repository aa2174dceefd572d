"""The workloads, and where W3 goes when PacketFlow's stream substrate lands.

Adding a workload means: an entry here; the reactor in ``pf_topology`` (selected by
``BENCH_WORKLOAD``); the same work by hand in ``contestants/raw.py`` and
``contestants/faust_app.py``; its output check in ``verify``. The harness runs every
workload the same way (pre-produced input, throughput, then latency at half the max).
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
}

STATE_RUN = "state"  # W2 with many distinct accounts: worker memory

# W3, windowed: per-account 10-second tumbling count and sum on event time. It needs
# PacketFlow's stream substrate (windows, watermarks), which has not landed; until it
# does, asking for W3 says so instead of running something that only looks like it.
PENDING: dict[str, str] = {
    "W3": "W3 (windowed) waits for PacketFlow's stream substrate (packetflow.streams); "
    "see benchmarks/workloads.py for what adding it takes",
}
