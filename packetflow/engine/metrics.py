"""Worker counters, readable from Python now and exported by the observability layer later."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerMetrics:
    """What a worker has done since it started."""

    consumed: int = 0
    batches: int = 0
    commits: int = 0
    emitted: int = 0
    processed: Counter[str] = field(default_factory=Counter)  # per reactor
    errors: Counter[str] = field(default_factory=Counter)  # per reactor
    dead_lettered: Counter[str] = field(default_factory=Counter)  # per reason
    denied: Counter[str] = field(default_factory=Counter)  # per intent type
    denied_reasons: Counter[str] = field(default_factory=Counter)  # per reason
    revocations: int = 0  # revocation records applied
    restored: Counter[str] = field(default_factory=Counter)  # state entries per reactor

    def snapshot(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "batches": self.batches,
            "commits": self.commits,
            "emitted": self.emitted,
            "processed": dict(self.processed),
            "errors": dict(self.errors),
            "dead_lettered": dict(self.dead_lettered),
            "denied": dict(self.denied),
            "denied_reasons": dict(self.denied_reasons),
            "revocations": self.revocations,
            "restored": dict(self.restored),
        }
