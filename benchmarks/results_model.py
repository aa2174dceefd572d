"""What one benchmark run measured: plain dataclasses, turned into JSON and tables by report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Throughput:
    """A contestant working through a pre-produced input as fast as it can."""

    workload: str  # W1, W2, W3 or W2-state
    contestant: str
    records: int
    accounts: int
    ok: bool = False
    detail: str = ""
    # "faust-windows": faust's W3, timed to its table's last update and checked on its table
    # (its window results are not one per window; see benchmarks/contestants/faust_app.py)
    caveat: str = ""
    seconds: float | None = None  # first consumed record -> last output acknowledged
    rate: float | None = None  # records/s
    peak_rss: int | None = None  # bytes (VmHWM)
    cpu_seconds: float | None = None  # contestant process, user + system, whole life
    # CPU seconds from its first consumed record to the last output, per input record
    cpu_us_per_record: float | None = None
    log: str = ""  # where its output went, when it failed


@dataclass
class Latency:
    """A contestant under a steady offered load, each output timed against its input's send."""

    workload: str
    contestant: str
    offered_rate: float  # records/s asked of the load generator
    achieved_rate: float | None = None  # records/s it actually produced
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""
    samples: int = 0  # outputs timed after the warm-up
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    p99_all_ms: float | None = None  # warm-up included
    # median time from the input's send to the output's creation (its producer timestamp)
    p50_to_output_ms: float | None = None
    peak_rss: int | None = None
    log: str = ""


@dataclass
class Restart:
    """A worker started again on its own state (after a clean stop), deposits waiting."""

    workload: str  # W2-state
    contestant: str  # packetflow (memory: the whole changelog), packetflow-disk[-eos]
    accounts: int  # keys in its state
    ok: bool = False
    detail: str = ""
    seconds: float | None = None  # process start -> its first record processed
    restored: int | None = None  # changelog records it replayed (from its log)
    restore_seconds: float | None = None  # of those, reading the changelog (from its log)
    log: str = ""


@dataclass
class Target:
    name: str
    measured: str
    wanted: str
    status: str  # PASS, FAIL or n/a


@dataclass
class RunResults:
    mode: str
    command: str
    started: str
    machine: dict[str, object]
    settings: dict[str, object]
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runtime_seconds: float = 0.0

    def rate(self, workload: str, contestant: str) -> float | None:
        for t in self.throughput:
            if t.workload == workload and t.contestant == contestant and t.ok:
                return t.rate
        return None

    def failed(self) -> list[str]:
        """Runs whose contestant crashed or answered wrongly."""
        bad = [f"{t.workload}/{t.contestant}" for t in self.throughput if not t.ok]
        bad += [f"{t.workload}/{t.contestant} latency" for t in self.latency if not t.ok]
        return bad
