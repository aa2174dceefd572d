"""Is a contestant's output right? A fast wrong answer is a failure, never a figure.

W1: one ``DepositAccepted`` per input, amounts summing to the input's.
W2: one ``BalanceChanged`` per input; every (account, balance) pair distinct (balances only
grow, so a duplicate or a lost update shows); each account's final (largest) balance equals
the sum of its deposits, and so the finals sum to the sum of all deposits.
W3: exactly one ``WindowTotal`` per (account, window) of the input, each with that window's
deposit count and amount sum, and none for any other window (the end-of-input markers'
windows never close).

Faust cannot emit that (``contestants/faust_app.py``): it expires windows on the wall clock,
so a window may be closed and started afresh several times, and ``on_window_close`` skips
most closings. What can be checked is checked. :class:`TableVerifier` reads faust's windows
table's changelog (one record per update, in order per window): each update must add one
deposit to the window's running count (or start a new piece of the window at count 1, after
faust expired the previous piece), and for every (account, window) of the input the pieces
must add up to exactly its count and sum: every deposit folded once, into the right window.
Then every result faust emitted must be one of those pieces (a whole window when faust never
split it), each at most once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from benchmarks.produce import Expected, Window
from benchmarks.wire import BALANCE_CHANGED, DEPOSIT_ACCEPTED, WINDOW_TOTAL

OUTPUT_TYPE = {"W1": DEPOSIT_ACCEPTED, "W2": BALANCE_CHANGED, "W3": WINDOW_TOTAL}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str


def output_type(headers: Iterable[tuple[str, bytes]]) -> str | None:
    for name, value in headers:
        if name == "pf-type":
            return value.decode()
    return None


class Verifier:
    """Takes a contestant's output records one at a time, then says whether they add up."""

    def __init__(
        self,
        workload: str,
        expected: Expected,
        *,
        pieces: dict[Window, list[tuple[int, int]]] | None = None,
    ) -> None:
        self.workload = workload
        self.expected = expected
        # W3, faust: the pieces its table split each window into (``TableVerifier.pieces``);
        # each result must be one of them
        self.pieces = pieces
        self.want_type = OUTPUT_TYPE[workload]
        self.count = self.amount_sum = 0
        self.pairs: set[tuple[str, int]] = set()
        self.finals: dict[str, int] = {}
        self.results: dict[Window, list[tuple[int, int]]] = {}  # W3: (count, sum) per result
        self.problem: str | None = None

    def add(self, headers: Iterable[tuple[str, bytes]], value: bytes) -> None:
        self.count += 1
        if self.problem is not None:
            return
        if output_type(headers) != self.want_type:
            self.problem = f"output {self.count} is not a {self.want_type}"
            return
        try:
            out = orjson.loads(value)
            if self.workload == "W3":
                total = out["total"]
                self.amount_sum += total
                key = (out["account"], out["start"])
                self.results.setdefault(key, []).append((out["count"], total))
                return
            account, amount = out["account"], out["amount"]
            self.amount_sum += amount
            if self.workload == "W2":
                balance = out["balance"]
                self.pairs.add((account, balance))
                if balance > self.finals.get(account, 0):
                    self.finals[account] = balance
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.problem = f"output {self.count} is malformed: {exc}"

    def verdict(self) -> Verdict:
        expected, count = self.expected, self.count
        if self.problem is not None:
            return Verdict(False, self.problem)
        if self.workload == "W3":
            return self._windows() if self.pieces is None else self._windows_pieces()
        if count != expected.count:
            return Verdict(False, f"{count} outputs for {expected.count} inputs")
        if self.amount_sum != expected.amount_sum:
            return Verdict(
                False, f"amounts sum to {self.amount_sum}, inputs to {expected.amount_sum}"
            )
        if self.workload == "W2":
            if len(self.pairs) != count:
                return Verdict(
                    False, f"{count - len(self.pairs)} repeated (account, balance) pairs"
                )
            total = sum(self.finals.values())
            if total != expected.amount_sum:
                return Verdict(
                    False, f"final balances sum to {total}, deposits to {expected.amount_sum}"
                )
            if expected.balances and self.finals != expected.balances:
                wrong = sum(1 for a, b in expected.balances.items() if self.finals.get(a) != b)
                return Verdict(False, f"{wrong} accounts end on a wrong balance")
        return Verdict(True, f"{count} outputs, checksum {self.amount_sum}")

    def _windows(self) -> Verdict:
        """W3: one result per window, each with its window's count and sum."""
        want, got = self.expected.windows, self.results
        problems = _foreign(want, got)
        repeated = sum(1 for r in got.values() if len(r) > 1)
        if repeated:
            problems.append(f"{repeated:,} windows have more than one result")
        missing = sum(1 for w in want if w not in got)
        if missing:
            problems.append(f"{missing:,} of {len(want):,} windows have no result")
        counts = sums = 0
        for w, results in got.items():
            right = want.get(w)
            if right is not None:
                counts += sum(1 for c, _ in results if c != right[0])
                sums += sum(1 for _, s in results if s != right[1])
        if counts:
            problems.append(f"{counts:,} results have a wrong count")
        if sums:
            problems.append(f"{sums:,} results have a wrong sum")
        if not problems and self.amount_sum != self.expected.amount_sum:
            problems.append(
                f"sums add up to {self.amount_sum}, deposits to {self.expected.amount_sum}"
            )
        if problems:
            return Verdict(False, "; ".join(problems))
        return Verdict(True, f"{self.count} windows, one result each, checksum {self.amount_sum}")

    def _windows_pieces(self) -> Verdict:
        """W3, faust: every result one of its window's pieces, none twice."""
        want, got, pieces = self.expected.windows, self.results, self.pieces or {}
        problems = _foreign(want, got)
        strangers = emitted = whole = 0
        for w, results in got.items():
            unused = list(pieces.get(w, ()))
            for result in results:
                if result in unused:
                    unused.remove(result)
                    emitted += 1
                    whole += result == tuple(want.get(w, ()))
                else:
                    strangers += 1
        if strangers:
            problems.append(f"{strangers:,} results are no piece of their window in the table")
        if problems:
            return Verdict(False, "; ".join(problems))
        total = sum(len(p) for w, p in pieces.items() if w in want)
        return Verdict(
            True,
            f"{self.count:,} results, each a piece of its window: {whole:,} whole windows, "
            f"{emitted - whole:,} partial; {total - emitted:,} of the {total:,} pieces "
            f"never emitted; {sum(1 for w in want if w not in got):,} of {len(want):,} "
            "windows have no result at all",
        )


def _foreign(want: dict[Window, list[int]], got: dict[Window, list[tuple[int, int]]]) -> list[str]:
    foreign = sum(len(r) for w, r in got.items() if w not in want)
    return [f"{foreign:,} results for windows not in the input"] if foreign else []


class TableVerifier:
    """Faust's W3 windows table, from its changelog: every deposit of the input folded once
    into its (account, window), the end-of-input markers' windows included."""

    def __init__(self, expected: Expected) -> None:
        self.want = {**expected.windows, **expected.open_windows}
        self.pieces: dict[Window, list[tuple[int, int]]] = {}  # (count, sum) of each piece
        self.records = 0
        self.problem: str | None = None

    def add(self, key: bytes | None, value: bytes | None) -> None:
        """One changelog record: key ``[account, [start, end]]``, value ``[count, sum, ...]``."""
        self.records += 1
        if self.problem is not None:
            return
        try:
            account, (start, _end) = orjson.loads(key or b"")
            count, total = orjson.loads(value or b"null")[:2]
            window = (account, int(start))
        except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
            self.problem = f"changelog record {self.records} is malformed: {exc}"
            return
        pieces = self.pieces.setdefault(window, [])
        if count == 1:
            pieces.append((count, total))  # a window's first deposit, or after an expiry
        elif pieces and pieces[-1][0] == count - 1 and pieces[-1][1] < total:
            pieces[-1] = (count, total)
        else:
            self.problem = (
                f"changelog record {self.records}: {window} went from "
                f"{pieces[-1] if pieces else 'nothing'} to {(count, total)}"
            )

    def verdict(self) -> Verdict:
        if self.problem is not None:
            return Verdict(False, self.problem)
        want, pieces = self.want, self.pieces
        problems = []
        foreign = sum(1 for w in pieces if w not in want)
        if foreign:
            problems.append(f"the table holds {foreign:,} windows not in the input")
        missing = sum(1 for w in want if w not in pieces)
        if missing:
            problems.append(f"the table lacks {missing:,} of {len(want):,} windows")
        wrong = 0
        for w, parts in pieces.items():
            right = want.get(w)
            if right is not None and [sum(c for c, _ in parts), sum(s for _, s in parts)] != right:
                wrong += 1
        if wrong:
            problems.append(f"{wrong:,} windows' deposits do not add up to their count and sum")
        if problems:
            return Verdict(False, "; ".join(problems))
        split = sum(1 for w, parts in pieces.items() if len(parts) > 1 and w in want)
        total = sum(len(parts) for parts in pieces.values())
        return Verdict(
            True,
            f"table: every deposit in its window ({len(want):,} windows; faust's expiry split "
            f"{split:,} of them, {total:,} pieces)",
        )


def verify(
    workload: str,
    records: Iterable[tuple[Iterable[tuple[str, bytes]], bytes]],
    expected: Expected,
    *,
    pieces: dict[Window, list[tuple[int, int]]] | None = None,
) -> Verdict:
    """Check ``(headers, value)`` output records against what the input adds up to."""
    verifier = Verifier(workload, expected, pieces=pieces)
    for headers, value in records:
        verifier.add(headers, value)
    return verifier.verdict()


def verify_faust_windows(
    changelog: Iterable[tuple[bytes | None, bytes | None]],
    records: Iterable[tuple[Iterable[tuple[str, bytes]], bytes]],
    expected: Expected,
) -> Verdict:
    """Check faust's W3: its windows table's ``(key, value)`` changelog records, then its
    ``(headers, value)`` output records against the pieces the table shows."""
    table = TableVerifier(expected)
    for key, value in changelog:
        table.add(key, value)
    held = table.verdict()
    if not held.ok:
        return held
    emitted = verify("W3", records, expected, pieces=table.pieces)
    return Verdict(emitted.ok, f"{held.detail}; emitted: {emitted.detail}")
