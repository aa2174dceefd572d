"""The benchmark harness's own logic: what counts as a right answer, and that the hand-written
contestants check capabilities and write records the way PacketFlow does. No broker, no timing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from benchmarks.config import (
    DISORDER_MS,
    END_OF_INPUT_TIME,
    EVENT_EPOCH,
    GRACE_SECONDS,
    PARTITIONS,
    PRODUCER,
    packetflow_url,
)
from benchmarks.contestants import raw
from benchmarks.contestants.common import (
    CapabilityCheck,
    ContestantEnv,
    accepted,
    balance_changed,
    output_headers,
    read_input,
    window_start_ms,
    window_total,
)
from benchmarks.intents import BalanceChanged, DepositAccepted, WindowTotal, encode_deposit
from benchmarks.loadgen import templates
from benchmarks.produce import (
    Expected,
    deposits,
    end_marker_accounts,
    event_times,
    partition_of,
)
from benchmarks.report import evaluate, markdown
from benchmarks.results_model import Restart, RunResults, Target, Throughput
from benchmarks.runner import ContestantProcess, command
from benchmarks.verify import verify, verify_faust_windows
from benchmarks.wire import BALANCE_CHANGED, DEPOSIT_ACCEPTED, HIERARCHY, WINDOW_TOTAL
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


def test_an_input_reads_the_same_from_bytes_and_from_a_json_deserializers_dict() -> None:
    """Quix hands its callbacks the value its JSON deserializer made; raw and faust the
    bytes: the same checks, the same deposit."""
    value, headers = encode_deposit("acct-1", 42, 123, EVENT_EPOCH + 0.5)
    from_bytes, from_dict = read_input(headers, value), read_input(headers, orjson.loads(value))
    assert from_bytes == from_dict
    with pytest.raises(ValueError, match="amount"):
        read_input(headers, {**orjson.loads(value), "amount": 0})  # gt=0, as for bytes


@pytest.mark.parametrize("workload", ["W1", "W2"])
def test_hand_written_outputs_are_packetflow_records(workload: str) -> None:
    value, headers = encode_deposit("acct-1", 42, 123, EVENT_EPOCH + 0.5)
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
    value, headers = encode_deposit(template.account, template.amount, sent_us, template.event_time)
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


def _contestant(name: str, tmp_path: Path) -> ContestantProcess:
    env = ContestantEnv("W2", "127.0.0.1:9092", "in", "out", "bench.W2-state." + name, "m")
    return ContestantProcess(name, env, tmp_path)


def test_disk_contestants_keep_their_state_apart_and_eos_runs_exactly_once(
    tmp_path: Path,
) -> None:
    disk = _contestant("packetflow-disk", tmp_path)
    eos = _contestant("packetflow-disk-eos", tmp_path)
    assert disk.environment()["PACKETFLOW_STATE_DIR"] != eos.environment()["PACKETFLOW_STATE_DIR"]
    assert "BENCH_GUARANTEE" not in disk.environment()
    assert eos.environment()["BENCH_GUARANTEE"] == "exactly_once"
    assert "PACKETFLOW_STATE_DIR" not in _contestant("packetflow", tmp_path).environment()
    url = command("packetflow-librdkafka-disk", disk.env)[-1]
    assert BrokerURL.parse(url).options["client"] == "librdkafka"
    assert "client" not in BrokerURL.parse(command("packetflow-disk", disk.env)[-1]).options


def _state_results(accounts: int, rss: int, restart_s: float) -> RunResults:
    results = RunResults("full", "", "", {}, {})
    row = Throughput("W2-state", "packetflow-disk", accounts, accounts, ok=True, peak_rss=rss)
    results.throughput.append(row)
    results.restarts += [
        Restart("W2-state", "packetflow-disk", accounts, ok=True, seconds=restart_s, restored=0),
        Restart("W2-state", "packetflow-disk-eos", accounts, ok=True, seconds=99.0, restored=0),
    ]
    return results


def _disk_targets(results: RunResults) -> dict[str, Target]:
    return {t.name: t for t in evaluate(results) if "on disk" in t.name}


def test_disk_targets_judge_the_at_least_once_restart_at_ten_million_accounts() -> None:
    judged = _disk_targets(_state_results(10_000_000, 900 * 2**20, 3.2))
    rss = judged["W2 with 10,000,000 accounts on disk: PacketFlow RSS"]
    restart = judged["W2 with 10,000,000 accounts on disk: restart, processing again"]
    assert (rss.status, restart.status, restart.measured) == ("PASS", "PASS", "3.2 s")
    judged = _disk_targets(_state_results(10_000_000, 2**31, 10.5))
    assert {t.status for t in judged.values()} == {"FAIL"}
    small = _disk_targets(_state_results(1_000_000, 900 * 2**20, 3.2))
    assert {t.status for t in small.values()} == {"n/a"}  # shown with its size, not judged
    assert len(small) == 2
    rows = markdown(_state_results(1_000_000, 900 * 2**20, 3.2))
    assert "| disk store, exactly-once | packetflow-disk-eos | 1,000,000 | 99.0 |" in rows


# -- W3: windows ---------------------------------------------------------------------------

T0 = float(EVENT_EPOCH)  # a window start
# (account, amount, event time): "a" in two windows, "b" in one, out of order within grace
W3_INPUT = [
    ("a", 5, T0 + 1.0),
    ("b", 7, T0 + 3.5),
    ("a", 3, T0 + 9.999),
    ("a", 4, T0 + 10.0),  # the next window: [T0 + 10, T0 + 20)
    ("b", 2, T0 + 8.0),  # behind the watermark, within grace
    ("a", 1, T0 + 12.25),
]
W3_WINDOWS = {
    ("a", EVENT_EPOCH): (2, 8),
    ("b", EVENT_EPOCH): (2, 9),
    ("a", EVENT_EPOCH + 10): (2, 5),
}


def _w3_expected(rows: list[tuple[str, int, float]] = W3_INPUT) -> Expected:
    expected = Expected(windowed=True)
    for account, amount, t in rows:
        expected.add(account, amount, t)
    for account in end_marker_accounts():
        expected.add_marker(account, END_OF_INPUT_TIME)
    return expected


def _w3_output(
    account: str, start: int, count: int, total: int
) -> tuple[list[tuple[str, bytes]], bytes]:
    value = window_total(account, start * 1000, count, total)
    return [("pf-type", WINDOW_TOTAL.encode())], value


def _w3_outputs(
    windows: dict[tuple[str, int], tuple[int, int]] = W3_WINDOWS,
) -> list[tuple[list[tuple[str, bytes]], bytes]]:
    return [_w3_output(a, start, c, t) for (a, start), (c, t) in windows.items()]


def test_w3_expected_counts_each_window() -> None:
    expected = _w3_expected()
    assert {w: tuple(v) for w, v in expected.windows.items()} == W3_WINDOWS
    assert expected.count == len(W3_INPUT) and expected.outputs == 3
    assert expected.inputs == len(W3_INPUT) + PARTITIONS  # the markers
    assert all(start == END_OF_INPUT_TIME for _, start in expected.open_windows)


def test_w3_right_answer_passes() -> None:
    verdict = verify("W3", _w3_outputs(), _w3_expected())
    assert verdict.ok, verdict.detail


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({("a", EVENT_EPOCH): (3, 8)}, "wrong count"),
        ({("a", EVENT_EPOCH): (2, 9)}, "wrong sum"),
        ({("b", EVENT_EPOCH): (1, 7)}, "wrong count"),  # the out-of-order deposit lost
        ({("a", EVENT_EPOCH + 10): (2, 4)}, "wrong sum"),
    ],
)
def test_w3_a_wrong_count_or_sum_fails(
    change: dict[tuple[str, int], tuple[int, int]], why: str
) -> None:
    verdict = verify("W3", _w3_outputs({**W3_WINDOWS, **change}), _w3_expected())
    assert not verdict.ok
    assert why in verdict.detail


def test_w3_a_deposit_in_the_wrong_window_fails() -> None:
    # the deposit at exactly T0 + 10 counted in the window before: both windows wrong
    windows = {**W3_WINDOWS, ("a", EVENT_EPOCH): (3, 12), ("a", EVENT_EPOCH + 10): (1, 1)}
    verdict = verify("W3", _w3_outputs(windows), _w3_expected())
    assert not verdict.ok
    assert "2 results have a wrong count" in verdict.detail


def test_w3_a_missing_window_fails() -> None:
    outputs = _w3_outputs()[:-1]
    verdict = verify("W3", outputs, _w3_expected())
    assert not verdict.ok
    assert "1 of 3 windows have no result" in verdict.detail


def test_w3_a_window_emitted_twice_fails_even_when_right() -> None:
    outputs = _w3_outputs()
    verdict = verify("W3", [*outputs, outputs[0]], _w3_expected())
    assert not verdict.ok
    assert "more than one result" in verdict.detail


def test_w3_a_window_emitted_in_pieces_fails() -> None:
    # early firing: the first window of "a" as (1, 5) and then (1, 3)
    outputs = [_w3_output("a", EVENT_EPOCH, 1, 5), _w3_output("a", EVENT_EPOCH, 1, 3)]
    outputs += _w3_outputs()[1:]
    verdict = verify("W3", outputs, _w3_expected())
    assert not verdict.ok


@pytest.mark.parametrize(
    "extra",
    [("c", EVENT_EPOCH, 1, 1), ("a", EVENT_EPOCH + 20, 1, 1)],
    ids=["unknown account", "unknown window"],
)
def test_w3_a_result_for_a_window_not_in_the_input_fails(extra: tuple[str, int, int, int]) -> None:
    verdict = verify("W3", [*_w3_outputs(), _w3_output(*extra)], _w3_expected())
    assert not verdict.ok
    assert "not in the input" in verdict.detail


def test_w3_the_end_of_input_markers_windows_must_not_close() -> None:
    marker = end_marker_accounts()[0]
    outputs = [*_w3_outputs(), _w3_output(marker, END_OF_INPUT_TIME, 1, 1)]
    verdict = verify("W3", outputs, _w3_expected())
    assert not verdict.ok
    assert "not in the input" in verdict.detail


def test_w3_a_wrong_output_type_fails() -> None:
    outputs = _w3_outputs()
    outputs[0] = ([("pf-type", DEPOSIT_ACCEPTED.encode())], outputs[0][1])
    assert not verify("W3", outputs, _w3_expected()).ok


def test_w3_event_times_are_fixed_span_several_windows_and_are_never_late() -> None:
    times = list(event_times(50_000, seed=3))
    assert times == list(event_times(50_000, seed=3))
    assert len({window_start_ms(t) for t in times}) >= 5
    assert all(round(t * 1000) == t * 1000 for t in times[:1000])  # whole milliseconds
    # behind the running maximum by no more than DISORDER_MS < grace: never late
    assert DISORDER_MS < GRACE_SECONDS * 1000
    high = times[0]
    for t in times:
        assert high - t <= DISORDER_MS / 1000 + 1e-6
        high = max(high, t)


def test_end_of_input_markers_one_per_partition() -> None:
    accounts = end_marker_accounts()
    assert [partition_of(a.encode()) for a in accounts] == list(range(PARTITIONS))
    assert END_OF_INPUT_TIME > EVENT_EPOCH + 10**8  # beyond any input's event times, and now


def test_window_start_agrees_with_packetflow_at_the_boundaries() -> None:
    from packetflow.streams.window_agent import event_time_function
    from packetflow.streams.window_kinds import Tumbling

    size = Tumbling(10).size_ms
    time_of = event_time_function("event_time")
    for t in (T0, T0 + 9.999, T0 + 10.0, T0 + 0.001, T0 - 0.001, T0 + 12.345):
        deposit = read_input(*reversed(encode_deposit("a", 1, 0, t))).deposit
        ms = time_of(deposit, None)  # type: ignore[arg-type]
        assert window_start_ms(deposit.event_time) == ms - ms % size


# faust: its table splits windows into pieces when it expires them on the wall clock


def _changelog(updates: list[tuple[str, int, int, int]]) -> list[tuple[bytes, bytes]]:
    """faust's windows-table changelog records: ``(account, start, count, sum)`` each."""
    return [
        (orjson.dumps([a, [float(start), start + 9.9]]), orjson.dumps([c, s, "{}", None]))
        for a, start, c, s in updates
    ]


def _marker_updates() -> list[tuple[str, int, int, int]]:
    return [(a, END_OF_INPUT_TIME, 1, 1) for a in end_marker_accounts()]


E0 = EVENT_EPOCH
# "a"'s first window expired after its first deposit and started afresh: pieces (1, 5), (1, 3)
FAUST_UPDATES = [
    ("a", E0, 1, 5),
    ("b", E0, 1, 7),
    ("a", E0, 1, 3),
    ("a", E0 + 10, 1, 4),
    ("b", E0, 2, 9),
    ("a", E0 + 10, 2, 5),
    *_marker_updates(),
]


def test_w3_faust_pieces_that_add_up_pass_and_are_reported() -> None:
    outputs = [_w3_output("a", E0, 1, 5), _w3_output("b", E0, 2, 9)]
    verdict = verify_faust_windows(_changelog(FAUST_UPDATES), outputs, _w3_expected())
    assert verdict.ok, verdict.detail
    assert "split 1 of them" in verdict.detail
    assert "1 whole windows, 1 partial" in verdict.detail


@pytest.mark.parametrize(
    ("updates", "why"),
    [
        ([u for u in FAUST_UPDATES if u != ("a", E0, 1, 3)], "do not add up"),  # one lost
        ([*FAUST_UPDATES, ("a", E0 + 10, 1, 1)], "do not add up"),  # one counted twice
        ([u for u in FAUST_UPDATES if u[0] != "b"], "lacks 1"),
        ([*FAUST_UPDATES, ("c", E0, 1, 1)], "not in the input"),
        ([*FAUST_UPDATES[:4], ("b", E0, 3, 9), *FAUST_UPDATES[5:]], "went from"),
    ],
)
def test_w3_faust_a_table_that_does_not_add_up_fails(
    updates: list[tuple[str, int, int, int]], why: str
) -> None:
    verdict = verify_faust_windows(_changelog(updates), [], _w3_expected())
    assert not verdict.ok
    assert why in verdict.detail


@pytest.mark.parametrize(
    "result",
    [("a", E0, 2, 8), ("a", E0, 1, 4), ("b", E0, 3, 10), ("c", E0, 1, 1)],
    ids=["the whole of a split window", "no piece", "over its window", "no window"],
)
def test_w3_faust_a_result_that_is_no_piece_fails(result: tuple[str, int, int, int]) -> None:
    outputs = [_w3_output(*result)]
    verdict = verify_faust_windows(_changelog(FAUST_UPDATES), outputs, _w3_expected())
    assert not verdict.ok


def test_w3_faust_a_piece_emitted_twice_fails() -> None:
    outputs = [_w3_output("a", E0, 1, 5), _w3_output("a", E0, 1, 5)]
    assert not verify_faust_windows(_changelog(FAUST_UPDATES), outputs, _w3_expected()).ok


# the raw contestant's hand-written windows, fed records directly


@dataclass
class _Message:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class _Outputs:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def add(
        self, topic: str, partition: int, key: bytes, value: bytes | None, headers: list
    ) -> None:
        self.records.append((topic, partition, key, value, headers))


def _message(account: str, amount: int, t: float) -> _Message:
    value, headers = encode_deposit(account, amount, 0, t)
    return _Message(account.encode(), value, headers)


def _raw_windows(
    batches: list[list[_Message]], work: raw.Work | None = None
) -> tuple[_Outputs, int]:
    env = ContestantEnv("W3", "-", "in", "out", "g", "")
    windows, outputs, late = raw.Windows(), _Outputs(), 0
    work = work or raw.Work("W3")
    for batch in batches:
        _, too_late = asyncio.run(
            raw.window_batch(env, batch, windows, 0, work, outputs, "changelog")  # type: ignore[arg-type]
        )
        late += too_late
    return outputs, late


@pytest.mark.parametrize("lean", [False, True], ids=["raw", "raw-lean"])
@pytest.mark.parametrize("split", [1, 2, 3, 6], ids=lambda n: f"batches of {n}")
def test_raw_windows_close_on_the_watermark_whatever_the_batches(split: int, lean: bool) -> None:
    messages = [_message(*row) for row in W3_INPUT]
    messages.append(_message(end_marker_accounts()[0], 1, END_OF_INPUT_TIME))
    batches = [messages[i : i + split] for i in range(0, len(messages), split)]
    outputs, late = _raw_windows(batches, raw.LeanWork("W3") if lean else raw.Work("W3"))
    results = [(h, v) for topic, _, _, v, h in outputs.records if topic == "out" and v]
    verdict = verify("W3", results, _w3_expected())
    assert verdict.ok, verdict.detail
    assert late == 0
    decoded = [WindowTotal.model_validate_json(v) for _, v in results]
    assert {(w.account, w.start) for w in decoded} == set(W3_WINDOWS)
    wanted = ["pf-type"] if lean else ["pf-type", "pf-version", "content-type", "pf-context"]
    for headers, _ in results:
        assert [name for name, _ in headers][:4] == wanted  # the lean floor writes its type only


def test_raw_windows_stay_open_until_the_watermark_passes_end_plus_grace() -> None:
    # the watermark at T0 + 11.999: [T0, T0 + 10) closes at T0 + 12, so it is still open
    outputs, _ = _raw_windows([[_message("a", 5, T0 + 1), _message("b", 1, T0 + 11.999)]])
    assert not [r for r in outputs.records if r[0] == "out"]
    outputs, _ = _raw_windows([[_message("a", 5, T0 + 1), _message("b", 1, T0 + 12)]])
    assert [orjson.loads(r[3] or b"") for r in outputs.records if r[0] == "out"] == [
        {"account": "a", "start": EVENT_EPOCH, "count": 1, "total": 5}
    ]


def test_raw_counts_a_deposit_late_when_its_window_has_closed() -> None:
    batch = [_message("a", 5, T0 + 1), _message("a", 1, T0 + 12), _message("b", 2, T0 + 9)]
    outputs, late = _raw_windows([batch])
    assert late == 1
    assert [orjson.loads(r[3] or b"")["count"] for r in outputs.records if r[0] == "out"] == [1]
