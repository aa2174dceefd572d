"""Settings shared by every contestant, run sizes, and the targets the run is judged against.

The producer and consumer settings below are the ones PacketFlow's ``kafka://`` transport
uses by default (``packetflow/engine/kafka.py``); the raw aiokafka and faust contestants
are configured with the same values, as far as each library exposes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PARTITIONS = 4
MAX_BATCH = 5000  # records per getmany: PacketFlow's default max_batch, faust's max_poll_records

# aiokafka producer keyword arguments, identical for every contestant and for the load.
PRODUCER: dict[str, object] = {
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "enable_idempotence": True,
}

# aiokafka consumer keyword arguments (group consumers of every contestant).
CONSUMER: dict[str, object] = {
    "enable_auto_commit": False,
    "auto_offset_reset": "earliest",
    "max_partition_fetch_bytes": 1024 * 1024,
    "fetch_max_wait_ms": 500,  # aiokafka's default; faust's own is 1500
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
}


def packetflow_url(bootstrap: str) -> str:
    """The ``kafka://`` URL that gives PacketFlow exactly the settings above."""
    return (
        f"kafka://{bootstrap}?acks=all&linger_ms={PRODUCER['linger_ms']}"
        f"&max_batch_size={PRODUCER['max_batch_size']}&idempotence=true"
        f"&max_partition_fetch_bytes={CONSUMER['max_partition_fetch_bytes']}"
        f"&session_timeout_ms={CONSUMER['session_timeout_ms']}"
        f"&heartbeat_interval_ms={CONSUMER['heartbeat_interval_ms']}"
    )


# -- targets (printed PASS/FAIL, never asserted in tests) ---------------------------------

TARGET_VS_FAUST = 5.0  # PacketFlow records/s >= 5x faust-streaming
TARGET_VS_RAW = 0.5  # PacketFlow records/s >= 50% of the raw aiokafka ceiling
TARGET_P99_MS = 50.0  # p99 end-to-end latency at 50% of max load
TARGET_STATE_RSS = 1024**3  # W2 with 1,000,000 accounts: worker RSS <= 1 GiB
TARGET_STATE_ACCOUNTS = 1_000_000

LATENCY_LOAD = 0.5  # offered load for the latency run, as a share of measured max
LATENCY_WARMUP = 2.0  # seconds at the start of each latency run not counted in p50/p99


@dataclass(frozen=True)
class RunSize:
    """How much work one benchmark run does."""

    records: int  # input records per throughput run (W1, W2)
    accounts: int  # distinct accounts in W1/W2 inputs
    latency_seconds: float  # steady load duration per latency run
    state_accounts: int  # distinct accounts (= records) in the W2 state-memory run
    state_contestants: tuple[str, ...] = field(default=("packetflow",))

    @classmethod
    def quick(cls) -> RunSize:
        return cls(
            records=50_000,
            accounts=10_000,
            latency_seconds=8.0,
            state_accounts=TARGET_STATE_ACCOUNTS,
            state_contestants=("packetflow",),
        )

    @classmethod
    def full(cls) -> RunSize:
        return cls(
            records=200_000,
            accounts=10_000,
            latency_seconds=30.0,
            state_accounts=TARGET_STATE_ACCOUNTS,
            state_contestants=("raw", "packetflow", "faust"),
        )
