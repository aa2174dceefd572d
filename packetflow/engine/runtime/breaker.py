"""The crash-loop breaker: a record that kills every worker that takes it is set aside.

Some failures cannot be caught in the process they happen in: the kernel's out-of-memory
killer, a crash in native code, a hang ended by a supervisor. Without help, each restarted
worker would read the same record and die again, and its partition would never move.

So every offset commit carries a mark in its metadata, ``pf-inflight:<deaths>:<probing>``:
"a worker is working from here". A worker that lets a partition go cleanly (a rebalance, a
stop) commits it without the mark. The next owner of a partition reads the committed mark:
still there means the last owner died while working from that offset, one more death (unless
there was nothing to read there). After ``limit - 1`` deaths at one offset it **probes** the
partition: one record at a time, in the whole worker (so a death has one suspect), each
committed before the next, for up to ``window`` records; if a worker dies while probing, the
record it was on is the culprit, and the next owner sets it aside (``pf-reason:
crash-loop``) and goes on. A poison record therefore costs ``limit`` deaths in all.

A death for an unrelated cause while a partition is probed (a SIGKILL by hand, say) sets
the record in hand aside too: it is kept on the dead-letter topic, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from packetflow.engine.transport import Committed, TopicPartition

_PREFIX = "pf-inflight:"


def mark(deaths: int, probing: bool) -> str:
    """The commit metadata that says a worker is working from the committed offset."""
    return f"{_PREFIX}{deaths}:{int(probing)}"


def read_mark(metadata: str) -> tuple[int, bool] | None:
    """(deaths, probing) from a commit's metadata; None when it carries no mark."""
    if not metadata.startswith(_PREFIX):
        return None
    deaths, _, probing = metadata[len(_PREFIX) :].partition(":")
    try:
        return max(int(deaths), 0), probing == "1"
    except ValueError:
        return None


class Breaker:
    """One worker's view of the partitions it owns: how many deaths, which to probe."""

    def __init__(self, limit: int, window: int) -> None:
        if limit < 2:
            raise ValueError("the crash-loop limit is at least 2")
        self.limit = limit
        self.window = window  # records probed one at a time (a batch's worth, at most)
        self.probing: dict[TopicPartition, int] = {}  # records left to take one at a time
        self._poison: dict[TopicPartition, tuple[int, int]] = {}  # (offset, deaths)
        self._notes: dict[TopicPartition, str] = {}

    @property
    def poisoned(self) -> bool:
        return bool(self._poison)

    def assigned(
        self,
        committed: Mapping[TopicPartition, Committed],
        starts: Mapping[TopicPartition, int],
        ends: Mapping[TopicPartition, int],
    ) -> dict[TopicPartition, str]:
        """Judge newly assigned partitions by their committed marks; returns the marks to
        commit at their start offsets before anything of them is processed."""
        out = {}
        for tp, start in starts.items():
            found = read_mark(committed[tp].metadata) if tp in committed else None
            if found is not None and start >= ends.get(tp, start + 1):
                found = None  # nothing was there to read: this partition killed no one
            deaths, was_probing = (found[0] + 1, found[1]) if found is not None else (0, False)
            probing = False
            if was_probing and deaths >= self.limit:
                self._poison[tp] = (start, deaths)
                self._notes[tp] = (
                    f"a worker died processing offset {start} alone: setting it aside "
                    "(crash-loop)"
                )
                deaths, probing = self.limit - 1, True
            elif deaths >= self.limit - 1:
                probing = True
                self._notes[tp] = (
                    f"{deaths} workers died working from offset {start}: taking this "
                    "partition one record at a time to find the record that kills them"
                )
            if probing:
                self.probing[tp] = self.window
                deaths = max(deaths, self.limit - 1)
            out[tp] = mark(deaths, probing)
        return out

    def notes(self, partitions: Iterable[TopicPartition]) -> list[tuple[TopicPartition, str]]:
        """What :meth:`assigned` decided that an operator should read (once)."""
        return [(tp, self._notes.pop(tp)) for tp in partitions if tp in self._notes]

    def next_probe(self, candidates: Iterable[TopicPartition]) -> TopicPartition | None:
        """The partition whose one record the worker runs next, alone (None: not probing)."""
        if not self.probing:
            return None
        probing = [tp for tp in candidates if tp in self.probing]
        return min(probing) if probing else next(iter(sorted(self.probing)))

    def poison(self, tp: TopicPartition, first_offset: int) -> int | None:
        """The deaths on ``tp``'s poison record if ``first_offset`` is it (then forgotten)."""
        found = self._poison.get(tp)
        if found is None or first_offset < found[0]:
            return None
        del self._poison[tp]
        return found[1] if first_offset == found[0] else None

    def processed(self, tp: TopicPartition, count: int) -> None:
        left = self.probing.get(tp)
        if left is not None:
            if left - count <= 0:
                del self.probing[tp]
            else:
                self.probing[tp] = left - count

    def marks(self, offsets: Iterable[TopicPartition]) -> dict[TopicPartition, str]:
        """The marks of a regular commit: working from the new offsets, no death there yet
        (or, while probing, one more death will set the record aside)."""
        probe = mark(self.limit - 1, True)
        plain = mark(0, False)
        return {tp: probe if tp in self.probing else plain for tp in offsets}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.probing.pop(tp, None)
            self._poison.pop(tp, None)
            self._notes.pop(tp, None)
