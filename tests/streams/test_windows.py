"""Windows users rely on (``packetflow.streams``): every window kind and aggregation.

The first part runs on :class:`TestDriver`'s virtual time, where event times are chosen
relative to the driver's start ``T0`` and windows close when the watermark (the largest
event time seen, or the virtual clock once a partition has been idle) passes their end plus
grace. The second part runs on both transports (the ``broker`` fixture: ``memory://`` and a
real Kafka): windows closing by the wall clock, late records, batching, and a restart with
windows open. There, event times are either record timestamps (closing by the wall clock)
or an hour ahead of the wall clock, so that only records move the watermark and every
result is exact whatever the timing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from support.running import WAIT, new_topology, running, unique

from packetflow import Client, Context, Intent, Received, TestDriver, Topology, TopologyError
from packetflow.streams import (
    Aggregate,
    Count,
    Hopping,
    Session,
    Sliding,
    Tumbling,
    Window,
    WindowResult,
    agg,
    window,
)

T0 = 1_700_000_000.0  # the drivers' virtual start time (a multiple of 10 s)

# -- intents -----------------------------------------------------------------------------


class Tick(Intent, type_name="win.Tick", key="key"):
    key: str
    n: int
    at: float  # event time, seconds since the epoch


class Reading(Intent, type_name="win.Reading", key="device"):
    device: str
    celsius: float
    at: datetime


class Stamped(Intent, type_name="win.Stamped", key="key"):
    key: str
    n: int
    when: datetime
    epoch: float


class Sale(Intent, type_name="win.Sale", key="account"):
    account: str
    shop: str
    amount: int
    at: float


class Metered(Intent, type_name="win.Metered", key="device", requires=["read:device/{device}"]):
    device: str
    n: int
    at: float


class Closed(Intent, type_name="win.Closed", key="key"):
    """A :class:`WindowResult` on the wire."""

    window: str
    key: str | None
    start: datetime
    end: datetime
    value: Any
    count: int
    final: bool


def report(result: WindowResult, ctx: Context) -> Closed:
    return Closed(**dataclasses.asdict(result))


def declare(
    topo: Topology,
    source: str,
    out: str,
    kinds: dict[str, tuple[Window, Aggregate]],
    *,
    intent: Any = Tick,
    time: Any = "at",
    **options: Any,
) -> None:
    """One window per ``name: (kind, aggregate)`` on ``source``, each reporting to ``out``."""
    topo.route(Closed, out)
    for name, (every, aggregate) in kinds.items():
        window(
            topo,
            intent,
            public=True,
            topic=source,
            every=every,
            aggregate=aggregate,
            time=time,
            name=name,
            emits=[Closed],
            **options,
        )(report)


Row = tuple[str, str | None, float, float, Any, int]


def row(result: Closed | WindowResult, base: float) -> Row:
    """(window, key, start, end, value, count), the times in seconds after ``base``."""
    return (
        result.window,
        result.key,
        round(result.start.timestamp() - base, 3),
        round(result.end.timestamp() - base, 3),
        result.value,
        result.count,
    )


def ordered(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r[0], r[1] or "", r[2], r[3]))


def rows(results: Iterable[Closed | WindowResult], base: float = T0) -> list[Row]:
    return ordered(row(r, base) for r in results)


def closed(received: Iterable[Received]) -> list[Closed]:
    out = []
    for r in received:
        assert isinstance(r.intent, Closed), r.record
        out.append(r.intent)
    return out


def tick(key: str, offset: float, n: int, base: float = T0) -> Tick:
    return Tick(key=key, n=n, at=base + offset)


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, UTC)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def driver_for(topo: Topology) -> TestDriver:
    return TestDriver(topo, start_time=T0)


# == TestDriver: virtual time ============================================================


def test_tumbling_aggregations_are_exact() -> None:
    topo = new_topology("tumbling")
    seen: list[WindowResult] = []

    def capture(result: WindowResult, ctx: Context) -> Closed:
        seen.append(result)
        return report(result, ctx)

    every = Tumbling(10)
    declare(
        topo,
        "readings",
        "closed",
        {
            "mean": (every, agg.mean("celsius")),
            "sum": (every, agg.sum("celsius")),
            "count": (every, agg.count()),
            "min": (every, agg.min("celsius")),
            "max": (every, agg.max("celsius")),
            "last": (every, agg.last("celsius")),
        },
        intent=Reading,
    )
    window(
        topo,
        Reading,
        topic="readings",
        every=every,
        aggregate=agg.collect("celsius"),
        time="at",
        public=True,
    )(capture)  # named after the function: "capture"

    with driver_for(topo) as driver:
        # d1: three readings in [0, 10), one exactly at 10 (the next window); d2: one
        for device, offset, celsius in [
            ("d1", 1, 20.5),
            ("d2", 3, -4.0),
            ("d1", 4, 18.0),
            ("d1", 9.999, 25.5),
        ]:
            driver.send(Reading(device=device, celsius=celsius, at=at(offset)))
        assert driver.emitted("closed") == []
        (open_mean,) = driver.state("mean", "d1")
        assert row(open_mean, T0) == ("mean", "d1", 0, 10, 64.0 / 3, 3)
        assert open_mean.final is False
        assert driver.state("mean", "nobody") is None

        driver.send(Reading(device="d1", celsius=30.0, at=at(10)))
        driver.advance_time(25)  # every window has ended; no record needed
        got = rows(driver.emitted("closed"))

    assert got == ordered(
        [
            ("capture", "d1", 0, 10, [20.5, 18.0, 25.5], 3),
            ("capture", "d1", 10, 20, [30.0], 1),
            ("capture", "d2", 0, 10, [-4.0], 1),
            ("count", "d1", 0, 10, 3, 3),
            ("count", "d1", 10, 20, 1, 1),
            ("count", "d2", 0, 10, 1, 1),
            ("last", "d1", 0, 10, 25.5, 3),
            ("last", "d1", 10, 20, 30.0, 1),
            ("last", "d2", 0, 10, -4.0, 1),
            ("max", "d1", 0, 10, 25.5, 3),
            ("max", "d1", 10, 20, 30.0, 1),
            ("max", "d2", 0, 10, -4.0, 1),
            ("mean", "d1", 0, 10, 64.0 / 3, 3),
            ("mean", "d1", 10, 20, 30.0, 1),
            ("mean", "d2", 0, 10, -4.0, 1),
            ("min", "d1", 0, 10, 18.0, 3),
            ("min", "d1", 10, 20, 30.0, 1),
            ("min", "d2", 0, 10, -4.0, 1),
            ("sum", "d1", 0, 10, 64.0, 3),
            ("sum", "d1", 10, 20, 30.0, 1),
            ("sum", "d2", 0, 10, -4.0, 1),
        ]
    )

    # what the function itself received
    assert sorted((r.key, r.start, r.end, r.count, r.final) for r in seen) == [
        ("d1", at(0), at(10), 3, True),
        ("d1", at(10), at(20), 1, True),
        ("d2", at(0), at(10), 1, True),
    ]
    assert all(r.window == "capture" and r.start.tzinfo is UTC for r in seen)


def test_hopping_windows_put_each_intent_in_size_over_advance_windows() -> None:
    topo = new_topology("hopping")
    declare(
        topo,
        "ticks",
        "closed",
        {
            "by5": (Hopping(10, 5), agg.sum("n")),
            "by2": (Hopping(timedelta(seconds=6), timedelta(seconds=2)), agg.collect("n")),
        },
    )
    with driver_for(topo) as driver:
        for offset, n in [(1, 1), (6, 10), (12, 100)]:
            driver.send(tick("k", offset, n))
        driver.advance_time(30)
        got = rows(driver.emitted("closed"))

    by5 = [r for r in got if r[0] == "by5"]
    assert by5 == [
        ("by5", "k", -5, 5, 1, 1),
        ("by5", "k", 0, 10, 11, 2),
        ("by5", "k", 5, 15, 110, 2),
        ("by5", "k", 10, 20, 100, 1),
    ]
    by2 = [r for r in got if r[0] == "by2"]
    for n, offset in [(1, 1), (10, 6), (100, 12)]:  # each in 6/2 = 3 windows, the right ones
        holding = [(start, end) for _, _, start, end, ns, _ in by2 if n in ns]
        assert holding == [(s, s + 6) for s in range(offset - offset % 2 - 4, offset + 1, 2)]
    assert sum(r[5] for r in by2) == 9
    with pytest.raises(ValueError, match="advance cannot exceed"):
        Hopping(5, 10)


def test_sliding_windows_hold_what_is_in_t_minus_size_to_t() -> None:
    topo = new_topology("sliding")
    declare(topo, "ticks", "closed", {"slide": (Sliding(10), agg.sum("n"))})
    with driver_for(topo) as driver:
        for offset, n in [(1, 1), (5, 10), (11, 100), (15, 1000)]:
            driver.send(tick("k", offset, n))
        # with no grace, the window ending at t closes as soon as the watermark reaches t
        got = rows(driver.emitted("closed"))
        assert driver.state("slide", "k") is None

    # one window per event time t, holding (t - 10, t]: the start is excluded
    assert got == [
        ("slide", "k", -9, 1, 1, 1),
        ("slide", "k", -5, 5, 11, 2),
        ("slide", "k", 1, 11, 110, 2),  # not the intent at exactly 1
        ("slide", "k", 5, 15, 1100, 2),  # not the intent at exactly 5
    ]


def test_sliding_window_takes_an_out_of_order_intent_within_its_grace() -> None:
    topo = new_topology("sliding-grace")
    declare(topo, "ticks", "closed", {"slide": (Sliding(10), agg.sum("n"))}, grace=5)
    with driver_for(topo) as driver:
        driver.send(tick("k", 20, 1))
        driver.send(tick("k", 27, 2))  # watermark 27: the window ending at 20 closes (20 + 5)
        # 19 is too late for a window of its own (19 + 5 <= 27) but (17, 27] is still open
        driver.send(tick("k", 19, 4))
        driver.send(tick("k", 16, 8))  # only in windows that have closed: late
        driver.advance_time(60)
        got = rows(driver.emitted("closed"))
        late = driver.records(topo.late_topic)

    assert got == [("slide", "k", 10, 20, 1, 1), ("slide", "k", 17, 27, 7, 3)]
    assert [r.intent for r in late] == [tick("k", 16, 8)]


def test_session_windows_merge_when_an_intent_bridges_two_and_close_gap_plus_grace_later() -> None:
    topo = new_topology("session")
    declare(
        topo,
        "ticks",
        "closed",
        {
            "visits": (Session(5), agg.sum("n")),
            "seen": (Session(timedelta(seconds=5)), agg.collect("n")),
        },
        grace=5,
    )
    with driver_for(topo) as driver:
        for offset, n in [(0, 1), (3, 2), (10, 4)]:
            driver.send(tick("k", offset, n))
        driver.send(tick("other", 2, 1000))
        # 10 is more than 5 after 3: two sessions; [0, 3] stays open until 3 + 5 + grace 5
        assert [row(r, T0) for r in driver.state("visits", "k")] == [
            ("visits", "k", 0, 3, 3, 2),
            ("visits", "k", 10, 10, 4, 1),
        ]
        driver.send(tick("k", 7, 8))  # within 5 of both: one session
        assert [row(r, T0) for r in driver.state("visits", "k")] == [("visits", "k", 0, 10, 15, 4)]
        driver.advance_time(19)  # the session closes at 10 + gap 5 + grace 5 = 20
        assert [r for r in rows(driver.emitted("closed")) if r[1] == "k"] == []
        driver.advance_time(1)
        got = rows(driver.emitted("closed"))

    assert got == [
        ("seen", "k", 0, 10, [1, 2, 4, 8], 4),  # merged in start order, then the bridge
        ("seen", "other", 2, 2, [1000], 1),
        ("visits", "k", 0, 10, 15, 4),
        ("visits", "other", 2, 2, 1000, 1),
    ]


def test_count_windows_close_when_full_and_can_hop() -> None:
    topo = new_topology("count")
    declare(
        topo,
        "ticks",
        "closed",
        {
            "three": (Count(3), agg.sum("n")),
            "sliding3": (Count(3, step=1), agg.sum("n")),
            "every2": (Count(3, step=2), agg.collect("n")),
        },
    )
    with driver_for(topo) as driver:
        for i in range(7):
            driver.send(tick("k", 10 * i, 2**i))  # n = 1, 2, 4, ... 64 at 0, 10, ... 60
        got = rows(driver.emitted("closed"))
        still_open = {name: driver.state(name, "k") for name in ("three", "sliding3", "every2")}
        driver.advance_time(1000)  # count windows never close by time
        assert len(driver.emitted("closed")) == len(got)

    assert got == [
        ("every2", "k", 0, 20, [1, 2, 4], 3),
        ("every2", "k", 20, 40, [4, 8, 16], 3),
        ("every2", "k", 40, 60, [16, 32, 64], 3),
        ("sliding3", "k", 0, 20, 7, 3),
        ("sliding3", "k", 10, 30, 14, 3),
        ("sliding3", "k", 20, 40, 28, 3),
        ("sliding3", "k", 30, 50, 56, 3),
        ("sliding3", "k", 40, 60, 112, 3),
        ("three", "k", 0, 20, 7, 3),
        ("three", "k", 30, 50, 56, 3),
    ]
    assert [row(r, T0) for r in still_open["three"]] == [("three", "k", 60, 60, 64, 1)]
    assert [row(r, T0) for r in still_open["sliding3"]] == [
        ("sliding3", "k", 50, 60, 96, 2),
        ("sliding3", "k", 60, 60, 64, 1),
    ]
    assert [row(r, T0) for r in still_open["every2"]] == [("every2", "k", 60, 60, [64], 1)]
    for bad in (lambda: Count(0), lambda: Count(3, step=4), lambda: Count(3, step=0)):
        with pytest.raises(ValueError, match="count windows need"):
            bad()


def spread() -> Aggregate:
    """Highest minus lowest reading: a custom aggregate with a JSON list accumulator."""

    def add(acc: list[float] | None, value: float) -> list[float]:
        return [value, value] if acc is None else [min(acc[0], value), max(acc[1], value)]

    def merge(a: list[float] | None, b: list[float] | None) -> list[float] | None:
        if a is None or b is None:
            return a or b
        return [min(a[0], b[0]), max(a[1], b[1])]

    return Aggregate(
        init=lambda: None,
        add=add,
        merge=merge,
        result=lambda acc: None if acc is None else acc[1] - acc[0],
        field=lambda reading: reading.celsius,
        name="spread",
    )


def test_custom_aggregate_with_init_add_merge_and_result() -> None:
    topo = new_topology("custom")
    declare(
        topo,
        "readings",
        "closed",
        {"tumbling": (Tumbling(10), spread()), "session": (Session(5), spread())},
        intent=Reading,
        grace=5,  # so the session [0, 0] is still open when 9 and then 5 arrive
    )
    assert topo.agents["session"].describe()["aggregate"] == "spread(<lambda>)"
    with driver_for(topo) as driver:
        driver.send(Reading(device="d1", celsius=20.0, at=at(0)))
        driver.send(Reading(device="d1", celsius=26.5, at=at(9)))  # a second session
        driver.send(Reading(device="d1", celsius=17.0, at=at(5)))  # bridges them: merge
        driver.advance_time(30)
        got = rows(driver.emitted("closed"))

    assert got == [("session", "d1", 0, 9, 9.5, 3), ("tumbling", "d1", 0, 10, 9.5, 3)]


def test_an_aggregate_without_merge_is_refused_for_session_and_sliding_windows() -> None:
    def no_merge() -> Aggregate:
        return Aggregate(init=lambda: 0, add=lambda acc, _: acc + 1, name="plain")

    for every in (Session(5), Sliding(10)):
        topo = new_topology("nomerge")
        with pytest.raises(TopologyError, match=f"window w: {every.kind} windows merge"):
            window(
                topo, Tick, topic="ticks", every=every, aggregate=no_merge(), name="w", public=True
            )(report)
        assert "w" not in topo.agents

    topo = new_topology("nomerge")
    for i, every in enumerate((Tumbling(10), Hopping(10, 5), Count(3))):
        window(
            topo, Tick, topic="ticks", every=every, aggregate=no_merge(), name=f"w{i}", public=True
        )(report)
    assert sorted(topo.agents) == ["w0", "w1", "w2"]


def test_other_declaration_errors() -> None:
    topo = new_topology("declare")
    for options, message in [
        ({"emit": "sometimes"}, "emit='sometimes'"),
        ({"grace": -1}, "grace and idle must be >= 0"),
        ({"idle": -1}, "grace and idle must be >= 0"),
    ]:
        with pytest.raises(TopologyError, match=message):
            window(
                topo,
                Tick,
                topic="ticks",
                every=Tumbling(1),
                aggregate=agg.count(),
                public=True,
                **options,
            )(report)
    with pytest.raises(TypeError, match="not a window kind"):
        window(topo, Tick, topic="ticks", every=Tumbling, aggregate=agg.count(), public=True)(  # type: ignore[arg-type]
            report
        )
    assert topo.agents == {}


def test_updates_mode_emits_on_every_change_and_nothing_at_close() -> None:
    topo = new_topology("updates")
    declare(
        topo,
        "ticks",
        "closed",
        {"tumbling": (Tumbling(10), agg.sum("n")), "hopping": (Hopping(10, 5), agg.sum("n"))},
        emit="updates",
    )
    with driver_for(topo) as driver:
        for offset, n in [(1, 1), (2, 2), (6, 4)]:
            driver.send(tick("k", offset, n))
        updates = driver.emitted("closed")
        driver.advance_time(60)
        assert len(driver.emitted("closed")) == len(updates)  # closing emits nothing more
        assert driver.state("tumbling", "k") is None  # but the windows are gone

    assert all(isinstance(u, Closed) and u.final is False for u in updates)
    tumbling = [row(u, T0) for u in updates if u.window == "tumbling"]
    assert tumbling == [
        ("tumbling", "k", 0, 10, 1, 1),
        ("tumbling", "k", 0, 10, 3, 2),
        ("tumbling", "k", 0, 10, 7, 3),
    ]
    hopping = [row(u, T0) for u in updates if u.window == "hopping"]
    assert sorted(hopping) == sorted(
        [
            ("hopping", "k", -5, 5, 1, 1),
            ("hopping", "k", 0, 10, 1, 1),
            ("hopping", "k", -5, 5, 3, 2),
            ("hopping", "k", 0, 10, 3, 2),
            ("hopping", "k", 0, 10, 7, 3),
            ("hopping", "k", 5, 15, 4, 1),
        ]
    )


def test_grace_takes_out_of_order_intents_and_later_ones_go_to_the_late_topic() -> None:
    topo = new_topology("grace")
    declare(topo, "ticks", "closed", {"sum10": (Tumbling(10), agg.sum("n"))}, grace=5)
    sends = [(1, 1), (12, 2), (8, 4), (16, 8), (9, 16), (3, 32)]
    with driver_for(topo) as driver:
        for offset, n in sends:
            driver.send(tick("k", offset, n))
        # [0, 10) took 8 (watermark 12 < 10 + 5) and closed at 16; 9 and 3 came after
        assert rows(driver.emitted("closed")) == [("sum10", "k", 0, 10, 5, 2)]
        driver.advance_time(30)
        got = rows(driver.emitted("closed"))
        late = driver.records(topo.late_topic)
        source = {(r.record.partition, r.record.offset): r for r in driver.records("ticks")}
        metrics = driver.metrics

    assert got == [("sum10", "k", 0, 10, 5, 2), ("sum10", "k", 10, 20, 10, 2)]
    assert [r.intent for r in late] == [tick("k", 9, 16), tick("k", 3, 32)]
    for r, event_time in zip(late, (9, 3), strict=True):
        assert r.header("pf-reason") == "late"
        assert r.header("pf-reactor") == "sum10"
        assert r.header("pf-event-time") == str(int((T0 + event_time) * 1000))
        assert r.header("pf-watermark") == str(int((T0 + 16) * 1000))
        assert r.header("pf-error") == (
            f"event time {iso(T0 + event_time)} falls only in windows already closed "
            f"(watermark {iso(T0 + 16)}, grace 5s)"
        )
        topic, partition, offset = (r.header("pf-source") or "").rsplit("/", 2)
        original = source[(int(partition), int(offset))]
        assert topic == "ticks"
        assert r.record.value == original.record.value  # byte for byte
        assert r.record.key == b"k"
    # nothing lost: every intent is in exactly one closed window or on the late topic
    assert sum(r[5] for r in got) + len(late) == len(sends)
    assert sum(r[4] for r in got) + sum(r.intent.n for r in late) == sum(n for _, n in sends)
    assert metrics["late"] == {"sum10": 2}
    assert metrics["windows_closed"] == {"sum10": 2}


def test_windows_close_as_virtual_time_passes_without_a_new_record() -> None:
    topo = new_topology("advance")
    declare(topo, "ticks", "closed", {"sum10": (Tumbling(10), agg.sum("n"))}, grace=2)
    with driver_for(topo) as driver:
        driver.send(tick("k", 3, 7))
        driver.advance_time(10)
        driver.advance_time(1.5)  # 11.5: past the end, not past the grace
        assert driver.emitted("closed") == []
        assert [row(r, T0) for r in driver.state("sum10", "k")] == [("sum10", "k", 0, 10, 7, 1)]
        assert driver.metrics["windows_open"] == {"sum10": 1}
        driver.advance_time(0.5)  # 12 = end + grace
        assert rows(driver.emitted("closed")) == [("sum10", "k", 0, 10, 7, 1)]
        assert driver.state("sum10", "k") is None
        assert driver.metrics.get("windows_open", {}) == {}  # (zero series are left out)
        driver.advance_time(100)
        assert len(driver.emitted("closed")) == 1  # once



def test_close_times_are_set_again_from_the_open_windows_not_kept_in_a_changelog() -> None:
    """A window's timers follow from its open windows (set again when its partitions are
    assigned, see the restart test below), so no timer changelog is written per record."""
    topo = new_topology("no-timer-log")
    declare(topo, "ticks", "closed", {"sum10": (Tumbling(10), agg.sum("n"))})
    assert [s.name for s in topo.stores() if s.owner == "sum10"] == [""]
    assert not [t for t in topo.internal_topics() if "timers" in t]

EVENT_TIMES: dict[str, Any] = {
    "datetime field": "when",
    "epoch seconds field": "epoch",
    "function returning a datetime": lambda s: s.when,
    "function returning epoch seconds": lambda s: s.epoch,
    "function returning a naive datetime (UTC)": lambda s: s.when.replace(tzinfo=None),
    "record timestamp": None,
}


@pytest.mark.parametrize("source", list(EVENT_TIMES))
def test_event_time_sources(source: str) -> None:
    topo = new_topology("event-time")
    declare(
        topo,
        "stamped",
        "closed",
        {"sum10": (Tumbling(10), agg.sum("n"))},
        intent=Stamped,
        time=EVENT_TIMES[source],
    )
    with driver_for(topo) as driver:
        now = 0.0
        for offset, n in [(1, 1), (4, 2), (12, 4)]:
            driver.advance_time(offset - now)  # so the record timestamp is the event time too
            now = offset
            driver.send(Stamped(key="k", n=n, when=at(offset), epoch=T0 + offset))
        driver.advance_time(20)
        assert rows(driver.emitted("closed")) == [
            ("sum10", "k", 0, 10, 3, 2),
            ("sum10", "k", 10, 20, 4, 1),
        ]


def test_an_event_time_of_the_wrong_type_dead_letters_the_record() -> None:
    topo = new_topology("bad-time")
    declare(topo, "ticks", "closed", {"sum10": (Tumbling(10), agg.sum("n"))}, time=str)
    with driver_for(topo) as driver:
        driver.send(tick("k", 1, 1))
        (dead,) = driver.dead_letters()
        assert driver.state("sum10", "k") is None
    assert dead.header("pf-reason") == "reactor-error"
    assert dead.header("pf-reactor") == "sum10"
    assert dead.header("pf-error") == (
        "TypeError: event time must be a datetime or seconds since the epoch, got "
        "\"key='k' n=1 at=1700000001.0\""
    )
    assert dead.intent == tick("k", 1, 1)


def test_results_carry_the_context_of_the_last_contributor() -> None:
    topo = new_topology("context", capabilities={"reader": ["read"]})
    declare(topo, "metered", "closed", {"sum10": (Tumbling(10), agg.sum("n"))}, intent=Metered)
    with driver_for(topo) as driver:
        contexts = {}
        for who in ("alice", "bob", "carol"):
            token = driver.issue(who, ["reader:device/*"])
            contexts[who] = Context.new(who, token=token, baggage={"who": who})
        driver.send(Metered(device="d1", n=1, at=T0 + 1), context=contexts["alice"])
        driver.send(Metered(device="d1", n=2, at=T0 + 2), context=contexts["bob"])
        driver.send(Metered(device="d2", n=4, at=T0 + 3), context=contexts["carol"])
        driver.send(Metered(device="d1", n=1000, at=T0 + 4))  # no token: denied, never counted
        driver.advance_time(20)
        out = {r.intent.key: r for r in driver.records("closed") if isinstance(r.intent, Closed)}
        denied = driver.denied()

    assert {k: (r.intent.value, r.intent.count) for k, r in out.items()} == {
        "d1": (3, 2),
        "d2": (4, 1),
    }
    assert len(denied) == 1 and denied[0].header("pf-reason") == "insufficient"
    for key, who in (("d1", "bob"), ("d2", "carol")):
        ctx, sent = out[key].context, contexts[who]
        assert ctx is not None
        assert ctx.principal == who
        assert ctx.trace_id == sent.trace_id
        assert ctx.correlation_id == sent.correlation_id
        assert ctx.causation_id == sent.intent_id
        assert ctx.token == sent.token
        assert ctx.baggage == {"who": who}
        assert ctx.trace == ("sum10",)
        assert out[key].record.key == key.encode()


def test_a_window_whose_function_raises_at_close_dead_letters_its_result_and_keeps_going() -> None:
    topo = new_topology("fragile")
    topo.route(Closed, "closed")

    @window(
        topo,
        Tick,
        topic="ticks",
        every=Tumbling(10),
        aggregate=agg.sum("n"),
        time="at",
        public=True,
    )
    def fragile(result: WindowResult, ctx: Context) -> Closed:
        if result.value == 13:
            raise ValueError(f"unlucky {result.value}\nsecond line")
        return report(result, ctx)

    with driver_for(topo) as driver:
        driver.send(tick("k", 1, 6))
        driver.send(tick("k", 2, 7))
        driver.advance_time(15)
        (dead,) = driver.dead_letters()
        assert driver.emitted("closed") == []
        driver.send(tick("k", 21, 5))  # the window keeps working
        driver.advance_time(20)
        got = rows(driver.emitted("closed"))
        assert len(driver.dead_letters()) == 1
        metrics = driver.metrics

    assert got == [("fragile", "k", 20, 30, 5, 1)]
    assert dead.header("pf-reason") == "reactor-error"
    assert dead.header("pf-reactor") == "fragile"
    assert dead.header("pf-error") == "ValueError: unlucky 13"
    assert dead.header("content-type") == "application/json"
    assert dead.record.key == b"k"
    assert orjson.loads(dead.record.value or b"") == {
        "window": "fragile",
        "key": "k",
        "start": at(0).isoformat(),
        "end": at(10).isoformat(),
        "value": 13,
        "count": 2,
    }
    assert metrics["errors"] == {"fragile": 1}
    assert metrics["windows_closed"] == {"fragile": 2}


def test_key_by_windows_per_another_field_through_a_repartition_topic() -> None:
    topo = new_topology("rekey")
    topo.route(Closed, "closed")

    @window(
        topo,
        Sale,
        topic="sales",
        every=Tumbling(10),
        aggregate=agg.sum("amount"),
        time="at",
        key_by="shop",
        public=True,
    )
    def per_shop(result: WindowResult, ctx: Context) -> Closed:
        return report(result, ctx)

    sales = [("a1", "s1", 10), ("a2", "s1", 20), ("a3", "s2", 5), ("a1", "s2", 7)]
    with driver_for(topo) as driver:
        for i, (account, shop, amount) in enumerate(sales):
            driver.send(Sale(account=account, shop=shop, amount=amount, at=T0 + i))
        assert driver.state("per_shop", "a1") is None  # keyed by shop, not by account
        assert [row(r, T0) for r in driver.state("per_shop", "s1")] == [
            ("per_shop", "s1", 0, 10, 30, 2)
        ]
        driver.advance_time(20)
        out = driver.records("closed")
        rekeyed = driver.records(f"{topo.name}.per_shop.repartition")
        originals = driver.records("sales")

    assert rows(closed(out)) == [("per_shop", "s1", 0, 10, 30, 2), ("per_shop", "s2", 0, 10, 12, 2)]
    assert sorted(r.record.key for r in out) == [b"s1", b"s2"]
    assert sorted(r.record.key for r in originals) == [b"a1", b"a1", b"a2", b"a3"]
    assert sorted(r.record.key for r in rekeyed) == [b"s1", b"s1", b"s2", b"s2"]
    assert sorted(r.record.value for r in rekeyed) == sorted(r.record.value for r in originals)


# == both transports: memory:// and a real Kafka ==========================================


def future_base() -> float:
    """An event time an hour ahead of the wall clock, a multiple of 10 s: a worker's clock
    never reaches it, so only records move the watermark."""
    return float((int(time.time()) // 10 + 360) * 10)


async def test_windows_close_by_the_wall_clock_without_further_records(broker: str) -> None:
    topo = new_topology("wall")
    source, out = unique("ticks"), unique("closed")
    declare(
        topo,
        source,
        out,
        {"sum1": (Tumbling(1), agg.sum("n")), "count1": (Tumbling(1), agg.count())},
        time=None,  # the record timestamp: the wall clock when sent
    )
    sends = [("a", 1), ("b", 10), ("a", 2), ("b", 20), ("a", 3)]
    async with running(topo, broker) as run:
        await run.client.send_many([(Tick(key=k, n=n, at=0), None) for k, n in sends])
        # the windows each record falls in, from the timestamps the broker holds
        expected: dict[tuple[str, float], list[int]] = {}
        for r in await run.read(source):
            assert isinstance(r.intent, Tick)
            start = r.record.timestamp // 1000
            expected.setdefault((r.intent.key, float(start)), []).append(r.intent.n)
        assert sum(len(ns) for ns in expected.values()) == len(sends)
        # no further record: only time passing closes them (bounded wait)
        got = closed(await run.wait_for(out, 2 * len(expected)))
        assert all(run.state(name, k) is None for name in ("sum1", "count1") for k in "ab")
        assert await run.read(topo.late_topic) == []

    assert rows(got, 0) == ordered(
        [("sum1", k, start, start + 1, sum(ns), len(ns)) for (k, start), ns in expected.items()]
        + [("count1", k, start, start + 1, len(ns), len(ns)) for (k, start), ns in expected.items()]
    )
    assert all(c.final for c in got)


async def test_late_records_go_to_the_late_topic_with_why(broker: str) -> None:
    topo = new_topology("late")
    source, out = unique("ticks"), unique("closed")
    declare(topo, source, out, {"sum10": (Tumbling(10), agg.sum("n"))}, grace=2)
    base = future_base()
    sends = [(1, 1), (11, 10), (5, 100), (13, 1000), (4, 10000), (25, 100000)]
    async with running(topo, broker) as run:
        deliveries = [await run.send(tick("k", offset, n, base)) for offset, n in sends]
        got = closed(await run.wait_for(out, 2))
        (late,) = await run.wait_for(topo.late_topic, 1)
        still_open = run.state("sum10", "k")

    # 5 came within the grace of [0, 10) (watermark 11 < 12); 4 after it closed (13 >= 12)
    assert rows(got, base) == [("sum10", "k", 0, 10, 101, 2), ("sum10", "k", 10, 20, 1010, 2)]
    assert [row(r, base) for r in still_open] == [("sum10", "k", 20, 30, 100000, 1)]
    assert late.intent == tick("k", 4, 10000, base)
    assert late.header("pf-reason") == "late"
    assert late.header("pf-reactor") == "sum10"
    assert late.header("pf-event-time") == str(int((base + 4) * 1000))
    assert late.header("pf-watermark") == str(int((base + 13) * 1000))
    assert late.header("pf-error") == (
        f"event time {iso(base + 4)} falls only in windows already closed "
        f"(watermark {iso(base + 13)}, grace 2s)"
    )
    bad = deliveries[4]
    assert late.header("pf-source") == f"{source}/{bad.partition}/{bad.offset}"
    # nothing lost: 2 + 2 closed, 1 open, 1 late
    assert sum(c.count for c in got) + still_open[0].count + 1 == len(sends)


# out of order on purpose: each record meets windows that the ones before made due
BATCH_SENDS = [(1, 1), (10, 2), (6, 4), (20, 8), (27, 16), (19, 32), (60, 64)]
# as if each record came alone: the windows due at the watermark close before the next
# record is added, so 6 does not join the session [1, 1] (closed at 1 + 5) and 19 misses
# the sliding window ending at 20 (closed at 20 + 5) but is in the one ending at 27
BATCH_EXPECTED = [
    ("session", "k", 1, 1, 1, 1),
    ("session", "k", 6, 10, 6, 2),
    ("session", "k", 20, 20, 8, 1),
    ("session", "k", 27, 27, 16, 1),
    ("sliding", "k", -9, 1, 1, 1),
    ("sliding", "k", -4, 6, 5, 2),
    ("sliding", "k", 0, 10, 7, 3),
    ("sliding", "k", 10, 20, 8, 1),
    ("sliding", "k", 17, 27, 56, 3),
]


def batching_topology() -> tuple[Topology, str, str]:
    topo = new_topology("batching")
    source, out = unique("ticks"), unique("closed")
    declare(topo, source, out, {"session": (Session(5), agg.sum("n"))})
    declare(topo, source, out, {"sliding": (Sliding(10), agg.sum("n"))}, grace=5)
    return topo, source, out


def test_one_record_at_a_time_gives_the_batching_reference() -> None:
    topo, source, out = batching_topology()
    with driver_for(topo) as driver:
        for offset, n in BATCH_SENDS:
            driver.send(tick("k", offset, n), topic=source)
        assert rows(closed(driver.records(out))) == BATCH_EXPECTED
        (late,) = driver.records(topo.late_topic)
    assert late.intent == tick("k", 19, 32)  # too late for a session of its own
    assert late.header("pf-reactor") == "session"


async def test_results_do_not_depend_on_how_records_are_batched(broker: str) -> None:
    topo, _, out = batching_topology()
    base = future_base()
    async with running(topo, broker) as run:
        await run.client.send_many([(tick("k", t, n, base), None) for t, n in BATCH_SENDS])
        got = closed(await run.wait_for(out, len(BATCH_EXPECTED)))
        (late,) = await run.wait_for(topo.late_topic, 1)
        if broker.startswith("memory://"):
            assert run.worker.metrics.batches == 1  # all of them in one batch

    assert rows(got, base) == BATCH_EXPECTED
    assert late.intent == tick("k", 19, 32, base)
    assert late.header("pf-reactor") == "session"


RESTART_WINDOWS: dict[str, tuple[Window, Aggregate]] = {
    "tumbling": (Tumbling(10), agg.sum("n")),
    "hopping": (Hopping(10, 5), agg.sum("n")),
    "sliding": (Sliding(10), agg.sum("n")),
    "session": (Session(5), agg.sum("n")),
}


async def test_restart_with_open_windows_counts_every_record_exactly_once(broker: str) -> None:
    topo = new_topology("restart")
    source, out = unique("ticks"), unique("closed")
    declare(topo, source, out, RESTART_WINDOWS, grace=5)
    declare(topo, source, out, {"count": (Count(2), agg.sum("n"))})
    base = future_base()

    def send(run: Any, key: str, offset: float, n: int, who: str) -> Any:
        return run.send(tick(key, offset, n, base), Context.new(who))

    async with running(topo, broker) as run:
        # j first: the watermark is per partition, and j may share k's
        await send(run, "j", 1, 100, "jane")
        await send(run, "k", 1, 1, "alice")
        await send(run, "k", 2, 2, "bob")
        await send(run, "k", 12, 4, "carol")
        await run.client.wait_for(out, 5, timeout=WAIT)
        await run.idle()
        before = closed(await run.read(out))
        # key k's watermark is 12: what ended by 12 (plus grace) closed, the rest is open
        assert [r for r in rows(before, base) if r[1] == "k"] == [
            ("count", "k", 1, 2, 3, 2),
            ("hopping", "k", -5, 5, 3, 2),
            ("session", "k", 1, 2, 3, 2),
            ("sliding", "k", -9, 1, 1, 1),
            ("sliding", "k", -8, 2, 3, 2),
        ]
        assert [row(r, base) for r in run.state("tumbling", "k")] == [
            ("tumbling", "k", 0, 10, 3, 2),
            ("tumbling", "k", 10, 20, 4, 1),
        ]

    async with running(topo, broker) as run:  # a new worker: windows restored
        await run.idle()
        assert [row(r, base) for r in run.state("tumbling", "k")] == [
            ("tumbling", "k", 0, 10, 3, 2),
            ("tumbling", "k", 10, 20, 4, 1),
        ]
        assert [row(r, base) for r in run.state("count", "k")] == [("count", "k", 12, 12, 4, 1)]
        assert run.worker.metrics.restored["tumbling"] >= 2  # k, j and the watermark(s)
        await send(run, "k", 3, 8, "dave")  # within grace of [0, 10): watermark 12 < 15
        await send(run, "k", 13, 16, "erin")
        await send(run, "k", 40, 32, "fred")  # closes everything of k before 35
        await send(run, "j", 40, 200, "jack")
        received = await run.wait_for(out, 22)
        assert await run.read(topo.late_topic) == []
        open_after = {
            name: [row(r, base) for r in run.state(name, "k") or []]
            for name in [*RESTART_WINDOWS, "count"]
        }

    assert rows(closed(received), base) == ordered(
        [
            ("tumbling", "k", 0, 10, 11, 3),  # 1 + 2 before the restart, 8 after
            ("tumbling", "k", 10, 20, 20, 2),
            ("tumbling", "j", 0, 10, 100, 1),
            ("hopping", "k", -5, 5, 3, 2),  # closed before the restart, not again after
            ("hopping", "k", 0, 10, 11, 3),
            ("hopping", "k", 5, 15, 20, 2),
            ("hopping", "k", 10, 20, 20, 2),
            ("hopping", "j", -5, 5, 100, 1),
            ("hopping", "j", 0, 10, 100, 1),
            ("sliding", "k", -9, 1, 1, 1),
            ("sliding", "k", -8, 2, 3, 2),
            ("sliding", "k", 2, 12, 12, 2),  # 3 came after its own window closed: joins this
            ("sliding", "k", 3, 13, 20, 2),
            ("sliding", "j", -9, 1, 100, 1),
            ("session", "k", 1, 2, 3, 2),
            ("session", "k", 3, 3, 8, 1),  # [1, 2] had closed (2 + 5 + 5 <= 12)
            ("session", "k", 12, 13, 20, 2),
            ("session", "j", 1, 1, 100, 1),
            ("count", "k", 1, 2, 3, 2),
            ("count", "k", 3, 12, 12, 2),  # 12 before the restart, 3 after
            ("count", "k", 13, 40, 48, 2),
            ("count", "j", 1, 40, 300, 2),
        ]
    )
    assert open_after == {
        "tumbling": [("tumbling", "k", 40, 50, 32, 1)],
        "hopping": [("hopping", "k", 35, 45, 32, 1), ("hopping", "k", 40, 50, 32, 1)],
        "sliding": [("sliding", "k", 30, 40, 32, 1)],
        "session": [("session", "k", 40, 40, 32, 1)],
        "count": [],
    }
    # results carry their last contributor's context, restored from the changelog for j
    principals = {
        (r.intent.window, r.intent.key, row(r.intent, base)[2]): r.context.principal
        for r in received
        if isinstance(r.intent, Closed) and r.context is not None
    }
    assert principals[("tumbling", "j", 0)] == "jane"
    assert principals[("tumbling", "k", 0)] == "dave"
    assert principals[("tumbling", "k", 10)] == "erin"
    assert principals[("session", "k", 1)] == "bob"


async def test_count_windows_on_both_transports(broker: str) -> None:
    topo = new_topology("count")
    source, out = unique("ticks"), unique("closed")
    declare(topo, source, out, {"pairs": (Count(2), agg.collect("n"))}, time=None)
    async with running(topo, broker) as run:
        await run.client.send_many([(Tick(key="k", n=n, at=0), None) for n in range(5)])
        got = closed(await run.wait_for(out, 2))
        (still_open,) = run.state("pairs", "k")

    assert sorted((c.value, c.count) for c in got) == [([0, 1], 2), ([2, 3], 2)]
    assert (still_open.value, still_open.count) == ([4], 1)


async def test_key_by_keeps_the_record_timestamp_as_event_time(broker: str) -> None:
    topo = new_topology("rekey-time")
    source, out = unique("sales"), unique("closed")
    topo.route(Closed, out)
    window(
        topo,
        Sale,
        topic=source,
        every=Tumbling(1),
        aggregate=agg.sum("amount"),
        key_by="shop",
        name="per_shop",
        emits=[Closed],
        public=True,
    )(report)  # time=None: the record timestamp
    sales = [("a1", "s1", 10), ("a2", "s1", 20), ("a3", "s2", 5)]
    async with Client(broker, topo) as client:  # sent while no worker runs: a backlog
        await client.send_many(
            [(Sale(account=a, shop=s, amount=n, at=0), None) for a, s, n in sales]
        )
        sent = await client.read(source)
    expected: dict[tuple[str, float], list[int]] = {}  # (shop, second) -> amounts
    for r in sent:
        assert isinstance(r.intent, Sale)
        second = float(r.record.timestamp // 1000)
        expected.setdefault((r.intent.shop, second), []).append(r.intent.amount)
    # start the worker (so re-key) only once the wall clock is past every record's second
    latest = max(second for _, second in expected)
    await asyncio.sleep(max(0.0, latest + 1 - time.time()) + 0.1)

    async with running(topo, broker) as run:
        got = closed(await run.wait_for(out, len(expected)))

    assert rows(got, 0) == ordered(
        ("per_shop", shop, start, start + 1, sum(ns), len(ns))
        for (shop, start), ns in expected.items()
    )
