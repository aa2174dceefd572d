"""What every contestant shares: its settings from the environment, and the per-record work
the raw aiokafka and faust contestants do by hand (PacketFlow does it in its engine).

The hand-written work is the same as PacketFlow's: validate the JSON value into a pydantic
model, parse the ``pf-context`` header, check that a capability in the ``pf-capabilities``
header implies ``deposit:account/<account>`` (through the same operation hierarchy), then
write the derived intent with PacketFlow's headers and an inherited context (new intent id
and span, same trace, causation = the input, this hop appended; capabilities carried on).
A W3 window's result inherits the context of the window's last deposit, as PacketFlow's
windows do. Nothing here imports PacketFlow.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from benchmarks.config import WINDOW_SECONDS
from benchmarks.wire import (
    BALANCE_CHANGED,
    DEPOSIT,
    DEPOSIT_ACCEPTED,
    HIERARCHY,
    REQUIRED_OPERATION,
    WINDOW_TOTAL,
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class ContestantEnv:
    """A contestant process's settings, passed by the harness as environment variables."""

    workload: str  # W1, W2 or W3
    bootstrap: str  # host:port
    input: str  # input topic
    output: str  # output topic
    group: str  # consumer group / faust app id / PacketFlow topology name
    marker: str  # file to write the wall-clock time of the first consumed record to

    @classmethod
    def from_env(cls) -> ContestantEnv:
        env = os.environ
        return cls(
            workload=env.get("BENCH_WORKLOAD", "W1"),
            bootstrap=env.get("BENCH_BOOTSTRAP", "127.0.0.1:9092"),
            input=env.get("BENCH_INPUT", "bench.deposits"),
            output=env.get("BENCH_OUTPUT", "bench.out"),
            group=env.get("BENCH_GROUP", "bench"),
            marker=env.get("BENCH_MARKER", ""),
        )

    def as_env(self) -> dict[str, str]:
        return {
            "BENCH_WORKLOAD": self.workload,
            "BENCH_BOOTSTRAP": self.bootstrap,
            "BENCH_INPUT": self.input,
            "BENCH_OUTPUT": self.output,
            "BENCH_GROUP": self.group,
            "BENCH_MARKER": self.marker,
        }


class FirstRecord:
    """Writes the wall-clock time of the first consumed record, and the process's CPU time
    then (all its threads), to the marker file, once: the run's CPU per record counts from
    there, not from start-up."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pending = bool(path)

    def mark(self) -> None:
        self.pending = False
        now, cpu = time.time(), time.process_time()
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{now!r} {cpu!r}")
        os.replace(tmp, self.path)


# -- the models (plain pydantic, same fields and config as benchmarks.intents) -----------


class Deposit(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    account: str
    amount: int = Field(gt=0)
    event_time: float
    sent_us: int


class DepositAccepted(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    account: str
    amount: int
    sent_us: int


class BalanceChanged(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    account: str
    amount: int
    balance: int
    sent_us: int


class WindowTotal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    account: str
    start: int
    count: int
    total: int


WINDOW_MS = WINDOW_SECONDS * 1000
FAUST_WINDOWS_TABLE = "windows"


def faust_windows_changelog(group: str) -> str:
    """The changelog faust writes for the W3 windows table (its app id is the group)."""
    return f"{group}-{FAUST_WINDOWS_TABLE}-changelog"


def window_start_ms(event_time: float) -> int:
    """The start (epoch ms) of the tumbling window holding ``event_time`` (epoch seconds),
    computed as PacketFlow does: whole milliseconds first, then down to the window size."""
    t = int(event_time * 1000)
    return t - t % WINDOW_MS


# -- capabilities, by hand ----------------------------------------------------------------


def _closure(operation: str) -> frozenset[str]:
    seen, stack = {operation}, [operation]
    while stack:
        for nxt in HIERARCHY.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return frozenset(seen)


def _resource_matcher(pattern: str) -> Callable[[str], bool]:
    """``*`` is one path segment, ``**`` (or a lone ``*``) anything: PacketFlow's rules."""
    if pattern in ("*", "**"):
        return lambda _resource: True
    if pattern.endswith("/*") and "*" not in pattern[:-1]:
        prefix, cut = pattern[:-1], len(pattern) - 1
        return lambda r: r.startswith(prefix) and "/" not in r[cut:]
    regex = "".join(
        ".*" if tok == "**" else "[^/]*" if tok == "*" else re.escape(tok)
        for tok in re.split(r"(\*\*|\*)", pattern)
    )
    compiled = re.compile(regex, re.S)
    return lambda r: compiled.fullmatch(r) is not None


class CapabilityCheck:
    """Does a ``pf-capabilities`` header imply ``deposit:account/<account>``?

    The header (a JSON list of ``"operation:resource"``) repeats from record to record, so
    it is parsed and compiled once per distinct value (cached by its bytes); each record
    then costs one prefix test per relevant held capability.
    """

    def __init__(self, operation: str = REQUIRED_OPERATION) -> None:
        self.operation = operation
        self._compiled: dict[bytes, list[Callable[[str], bool]]] = {}

    def allows(self, capabilities: bytes | None, account: str) -> bool:
        if capabilities is None:
            return False
        matchers = self._compiled.get(capabilities)
        if matchers is None:
            matchers = []
            for held in orjson.loads(capabilities):
                op, sep, resource = held.strip().partition(":")
                if self.operation in _closure(op):
                    matchers.append(_resource_matcher(resource if sep and resource else "*"))
            if len(self._compiled) > 10_000:
                self._compiled.clear()
            self._compiled[capabilities] = matchers
        resource = "account/" + account
        return any(m(resource) for m in matchers)


# -- the per-record work -------------------------------------------------------------------

_OUT_TYPE = {
    "W1": DEPOSIT_ACCEPTED.encode(),
    "W2": BALANCE_CHANGED.encode(),
    "W3": WINDOW_TOTAL.encode(),
}
_VERSION = b"1"
_JSON = b"application/json"


class Rejected(Exception):
    """An input the hand-written contestants refuse (wrong type or capability)."""


@dataclass(frozen=True, slots=True)
class Input:
    deposit: Deposit
    context: dict[str, Any]  # pf-context, parsed
    capabilities: bytes | None  # pf-capabilities, as it came
    context_raw: bytes  # pf-context, as it came (W3 keeps it in its window state)


def read_input(headers: Any, value: bytes | dict[str, Any]) -> Input:
    """Validate one input record: its type header, its value (pydantic; JSON bytes, or the
    dict a JSON deserializer made of them) and its context."""
    type_name = context_raw = capabilities = None
    for name, raw in headers or ():
        if name == "pf-type":
            type_name = raw
        elif name == "pf-context":
            context_raw = raw
        elif name == "pf-capabilities":
            capabilities = raw
    if type_name != _DEPOSIT_TYPE or context_raw is None:
        raise Rejected(f"not a {DEPOSIT} with a context")
    deposit = (
        Deposit.model_validate(value)
        if isinstance(value, dict)
        else Deposit.model_validate_json(value)
    )
    return Input(deposit, orjson.loads(context_raw), capabilities, context_raw)


_DEPOSIT_TYPE = DEPOSIT.encode()


def output_headers(workload: str, source: Input, hop: str) -> Headers:
    """PacketFlow's headers for an intent caused by ``source`` (its capabilities carry on)."""
    return derived_headers(workload, source.context, source.capabilities, hop)


def derived_headers(
    workload: str, context: dict[str, Any], capabilities: bytes | None, hop: str
) -> Headers:
    """PacketFlow's headers for an intent caused by the intent with ``context``."""
    derived = dict(context)
    derived["intent_id"] = os.urandom(16).hex()
    derived["span_id"] = os.urandom(8).hex()
    derived["parent_span_id"] = context.get("span_id")
    derived["causation_id"] = context.get("intent_id")
    derived["correlation_id"] = context.get("correlation_id") or context.get("intent_id")
    derived["trace"] = [*context.get("trace", ()), hop]
    headers = [
        ("pf-type", _OUT_TYPE[workload]),
        ("pf-version", _VERSION),
        ("content-type", _JSON),
        ("pf-context", orjson.dumps(derived)),
    ]
    if capabilities is not None:
        headers.append(("pf-capabilities", capabilities))
    return headers


def accepted(deposit: Deposit) -> bytes:
    """W1's output value."""
    return (
        DepositAccepted(account=deposit.account, amount=deposit.amount, sent_us=deposit.sent_us)
        .model_dump_json()
        .encode()
    )


def balance_changed(deposit: Deposit, balance: int) -> bytes:
    """W2's output value."""
    return (
        BalanceChanged(
            account=deposit.account,
            amount=deposit.amount,
            balance=balance,
            sent_us=deposit.sent_us,
        )
        .model_dump_json()
        .encode()
    )


def window_total(account: str, start_ms: int, count: int, total: int) -> bytes:
    """W3's output value: one closed window of one account."""
    return (
        WindowTotal(account=account, start=start_ms // 1000, count=count, total=total)
        .model_dump_json()
        .encode()
    )
