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


def packetflow_url(bootstrap: str, client: str | None = None) -> str:
    """The ``kafka://`` URL that gives PacketFlow exactly the settings above (``client``:
    aiokafka or librdkafka; None, the transport's default)."""
    chosen = f"&client={client}" if client else ""
    return (
        f"kafka://{bootstrap}?acks=all{chosen}&linger_ms={PRODUCER['linger_ms']}"
        f"&max_batch_size={PRODUCER['max_batch_size']}&idempotence=true"
        f"&max_partition_fetch_bytes={CONSUMER['max_partition_fetch_bytes']}"
        f"&session_timeout_ms={CONSUMER['session_timeout_ms']}"
        f"&heartbeat_interval_ms={CONSUMER['heartbeat_interval_ms']}"
    )


# -- targets (printed PASS/FAIL, never asserted in tests) ---------------------------------

TARGET_VS_QUIX = 1.0  # PacketFlow records/s >= Quix Streams' (stretch: STRETCH_VS_QUIX)
STRETCH_VS_QUIX = 1.5
TARGET_VS_FAUST = 5.0  # PacketFlow records/s >= 5x faust-streaming
TARGET_CPU_US = 20.0  # W1 and W2: PacketFlow CPU per record, from its first record on
CPU_WORKLOADS = ("W1", "W2")
TARGET_P99_MS = 50.0  # p99 end-to-end latency at 50% of max load
TARGET_STATE_RSS = 1024**3  # W2 with 1,000,000 accounts: worker RSS <= 1 GiB
TARGET_STATE_ACCOUNTS = 1_000_000
# W2 with 10,000,000 accounts on the disk store (full runs): RSS <= TARGET_STATE_RSS, and a
# restarted worker (at-least-once) processing again within TARGET_RESTART_SECONDS
TARGET_DISK_ACCOUNTS = 10_000_000
TARGET_RESTART_SECONDS = 10.0
RESTART_RECORDS = 1_000  # deposits waiting for a restarted worker: the first N accounts again

LATENCY_LOAD = 0.5  # offered load for the latency run, as a share of measured max
LATENCY_WARMUP = 2.0  # seconds at the start of each latency run not counted in p50/p99

# -- W3: per-account tumbling windows on event time -----------------------------------------

WINDOW_SECONDS = 10  # tumbling window size
GRACE_SECONDS = 2  # a window still takes records until the watermark passes end + grace
# Every deposit carries ``event_time`` (epoch seconds, millisecond precision). The i-th input
# record's is EVENT_EPOCH + i / EVENTS_PER_SECOND, minus up to DISORDER_MS at random (seeded):
# fixed, so every run's windows and results are the same whenever it runs, spanning
# records / EVENTS_PER_SECOND seconds of event time (50,000 records: 6 windows). The
# disorder stays below the grace period, so no deposit is ever late and every one counts.
EVENT_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z
EVENTS_PER_SECOND = 1_000
DISORDER_MS = 1_500
# End of input, the same for all three: after the deposits, one more deposit per partition
# (to an account of its own) stamped END_OF_INPUT_TIME. It moves every partition's event-time
# watermark past every real window's end + grace, so each contestant closes them by its own
# rule; the marker's own window (in 2100) never closes, so it never yields a result.
END_OF_INPUT_TIME = 4_102_444_800  # 2100-01-01T00:00:00Z
# faust closes (expires) windows in a cleanup task this often, on the wall clock (its
# default is 30 s); see contestants/faust_app.py
FAUST_CLEANUP_INTERVAL = 1.0


@dataclass(frozen=True)
class RunSize:
    """How much work one benchmark run does."""

    records: int  # input records per throughput run (W1, W2, W3)
    accounts: int  # distinct accounts in W1/W2 inputs
    latency_seconds: float  # steady load duration per latency run
    state_accounts: int  # distinct accounts (= records) in the W2 state-memory run
    state_contestants: tuple[str, ...] = field(default=("packetflow",))
    # distinct accounts in the W2 disk-store runs (packetflow-disk, packetflow-disk-eos)
    disk_accounts: int = TARGET_STATE_ACCOUNTS
    # distinct accounts in the W3 input: ~10 deposits per (account, window) at 1,000
    window_accounts: int = 1_000

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
            disk_accounts=TARGET_DISK_ACCOUNTS,
        )
