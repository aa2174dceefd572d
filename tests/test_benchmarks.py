"""The benchmark harness's own logic: what counts as a right answer, and that the hand-written
contestants check capabilities and write records the way PacketFlow does. No broker, no timing.
"""

from __future__ import annotations

import orjson
import pytest

from benchmarks.config import PRODUCER, packetflow_url
from benchmarks.contestants.common import (
    CapabilityCheck,
    accepted,
    balance_changed,
    output_headers,
    read_input,
)
from benchmarks.intents import BalanceChanged, DepositAccepted, encode_deposit
from benchmarks.loadgen import templates
from benchmarks.produce import Expected, deposits
from benchmarks.verify import verify
from benchmarks.wire import BALANCE_CHANGED, DEPOSIT_ACCEPTED, HIERARCHY
from packetflow import Capability, CapabilityHierarchy
from packetflow.engine.codec import Decoder
from packetflow.engine.transport import BrokerURL, Record


def _w1_output(account: str, amount: int) -> tuple[list[tuple[str, bytes]], bytes]:
    value = orjson.dumps({"account": account, "amount": amount, "sent_us": 1})
    return [("pf-type", DEPOSIT_ACCEPTED.encode())], value


def _w2_output(account: str, amount: int, balance: int) -> tuple[list[tuple[str, bytes]], bytes]:
    value = orjson.dumps({"account": account, "amount": amount, "balance": balance, "sent_us": 1})
    return [("pf-type", BALANCE_CHANGED.encode())], value


def _expected(pairs: list[tuple[str, int]]) -> Expected:
    expected = Expected()
    for account, amount in pairs:
        expected.add(account, amount)
    return expected


INPUT = [("a", 5), ("b", 7), ("a", 3), ("c", 1)]


def _w2_outputs(pairs: list[tuple[str, int]]) -> list[tuple[list[tuple[str, bytes]], bytes]]:
    balances: dict[str, int] = {}
    out = []
    for account, amount in pairs:
        balances[account] = balances.get(account, 0) + amount
        out.append(_w2_output(account, amount, balances[account]))
    return out


def test_w1_right_answer_passes() -> None:
    verdict = verify("W1", [_w1_output(a, n) for a, n in INPUT], _expected(INPUT))
    assert verdict.ok, verdict.detail


@pytest.mark.parametrize(
    ("outputs", "why"),
    [
        ([_w1_output(a, n) for a, n in INPUT[:-1]], "3 outputs for 4 inputs"),
        ([_w1_output(a, n) for a, n in [*INPUT, ("c", 1)]], "5 outputs for 4 inputs"),
        ([_w1_output(a, n + 1) for a, n in INPUT], "amounts sum to 20"),
        ([*[_w1_output(a, n) for a, n in INPUT[:-1]], _w2_output("c", 1, 1)], "not a"),
        ([*[_w1_output(a, n) for a, n in INPUT[:-1]], ([("pf-type", b"x")], b"{")], "not a"),
    ],
)
def test_w1_wrong_answers_fail(
    outputs: list[tuple[list[tuple[str, bytes]], bytes]], why: str
) -> None:
    verdict = verify("W1", outputs, _expected(INPUT))
    assert not verdict.ok
    assert why in verdict.detail


def test_w2_right_answer_passes() -> None:
    verdict = verify("W2", _w2_outputs(INPUT), _expected(INPUT))
    assert verdict.ok, verdict.detail


def test_w2_a_replayed_record_fails_even_with_the_right_count() -> None:
    outputs = _w2_outputs(INPUT)
    outputs[3] = outputs[0]  # "a" at 5 twice, "c" lost: count and amount sum still plausible
    assert not verify("W2", outputs, _expected(INPUT)).ok


def test_w2_a_lost_update_fails() -> None:
    outputs = _w2_outputs(INPUT)
    outputs[2] = _w2_output("a", 3, 3)  # the second deposit to "a" did not see the first
    verdict = verify("W2", outputs, _expected(INPUT))
    assert not verdict.ok
    assert "final balances" in verdict.detail or "wrong balance" in verdict.detail


def test_w2_wrong_final_balance_per_account_fails() -> None:
    expected = _expected(INPUT)
    expected.balances["b"], expected.balances["c"] = 6, 2  # same total, other split
    verdict = verify("W2", _w2_outputs(INPUT), expected)
    assert not verdict.ok
    assert "2 accounts" in verdict.detail


@pytest.mark.parametrize(
    "held",
    [
        ["teller:account/*"],
        ["deposit:account/acct-1"],
        ["deposit:account/**"],
        ["read:account/*"],
        ["withdraw:*"],
        ["teller:*"],
        ["teller:account/acct-1/*"],
        ["deposit:account/acct-*"],
        ["read:account/*", "deposit:account/acct-2"],
        [],
    ],
)
@pytest.mark.parametrize("account", ["acct-1", "acct-2", "x/y"])
def test_hand_written_capability_check_agrees_with_packetflow(
    held: list[str], account: str
) -> None:
    engine = CapabilityHierarchy(HIERARCHY)
    required = [Capability.parse(f"deposit:account/{account}")]
    allowed = not engine.missing([Capability.parse(c) for c in held], required)
    assert CapabilityCheck().allows(orjson.dumps(held), account) is allowed


def test_no_capabilities_header_is_not_allowed() -> None:
    assert CapabilityCheck().allows(None, "acct-1") is False


@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_hand_written_outputs_are_packetflow_records(workload: str) -> None:
    value, headers = encode_deposit("acct-1", 42, 123)
    source = read_input(headers, value)
    out_value = (
        accepted(source.deposit) if workload == "W1" else balance_changed(source.deposit, 50)
    )
    out_headers = output_headers(workload, source, "raw")
    out_type = DepositAccepted if workload == "W1" else BalanceChanged
    decoder = Decoder({out_type.intent_type: out_type})
    intent, context = decoder.decode(Record("t", 0, 0, b"acct-1", out_value, out_headers, 0))
    assert intent.account == "acct-1" and intent.amount == 42 and intent.sent_us == 123
    assert getattr(intent, "balance", 50) == 50
    assert context.causation_id == source.context["intent_id"]
    assert context.parent_span_id == source.context["span_id"]
    assert context.trace_id == source.context["trace_id"]
    assert context.intent_id != source.context["intent_id"]
    assert context.trace == ("raw",)
    assert [str(c) for c in context.capabilities] == ["teller:account/*"]


def test_load_generator_writes_the_bytes_the_codec_would() -> None:
    (template,) = templates(1, 10, seed=1)
    sent_us = 1_732_000_000_123_456
    value, headers = encode_deposit(template.account, template.amount, sent_us)
    assert template.prefix + b"%d}" % sent_us == value
    names = [name for name, _ in headers]
    assert [name for name, _ in template.headers] == names
    assert template.key == template.account.encode()


def test_deposits_are_reproducible_and_distinct_when_asked() -> None:
    assert list(deposits(50, 10, seed=3)) == list(deposits(50, 10, seed=3))
    accounts = [a for a, _ in deposits(50, 10, seed=3, distinct=True)]
    assert len(set(accounts)) == 50


def test_packetflow_gets_the_shared_producer_settings() -> None:
    options = BrokerURL.parse(packetflow_url("127.0.0.1:9092")).options
    assert options["acks"] == "all"
    assert options["linger_ms"] == str(PRODUCER["linger_ms"])
    assert options["max_batch_size"] == str(PRODUCER["max_batch_size"])
    assert options["idempotence"] == "true"
