"""Is a contestant's output right? A fast wrong answer is a failure, never a figure.

W1: one ``DepositAccepted`` per input, amounts summing to the input's.
W2: one ``BalanceChanged`` per input; every (account, balance) pair distinct (balances only
grow, so a duplicate or a lost update shows); each account's final (largest) balance equals
the sum of its deposits, and so the finals sum to the sum of all deposits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from benchmarks.produce import Expected
from benchmarks.wire import BALANCE_CHANGED, DEPOSIT_ACCEPTED

OUTPUT_TYPE = {"W1": DEPOSIT_ACCEPTED, "W2": BALANCE_CHANGED}


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

    def __init__(self, workload: str, expected: Expected) -> None:
        self.workload = workload
        self.expected = expected
        self.want_type = OUTPUT_TYPE[workload]
        self.count = self.amount_sum = 0
        self.pairs: set[tuple[str, int]] = set()
        self.finals: dict[str, int] = {}
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


def verify(
    workload: str, records: Iterable[tuple[Iterable[tuple[str, bytes]], bytes]], expected: Expected
) -> Verdict:
    """Check ``(headers, value)`` output records against what the input adds up to."""
    verifier = Verifier(workload, expected)
    for headers, value in records:
        verifier.add(headers, value)
    return verifier.verdict()
