"""IoT readings: windowed temperatures, sessions per device, late readings and a slow pager.

Run it:   packetflow worker topologies.sensors --broker kafka://127.0.0.1:9092
Feed it:  python -m topologies.sensors --feed kafka://127.0.0.1:9092 --seconds 60
Simulate: python -m topologies.sensors [--count N]     (virtual time, no broker; also
          ``packetflow demo topologies.sensors``)

Gateways report ``Reading`` intents (device, site, celsius, taken_at) holding a token with
``sensor:device/*``; operators set per-device ``Threshold`` rows (``operator``), kept in a
table. From the readings, on event time (``taken_at``):

- ``ten_second_average``: 10 s tumbling mean per device (2 s grace); a window whose mean
  exceeds the device's threshold (a stream-table join) also raises ``Overheated``;
- ``minute_peak``: the hottest reading of the last minute, every 10 s (hopping);
- ``device_sessions``: a session per device while it reports at most 30 s apart;
- readings older than their windows' grace land on ``sensors.late`` with the reason;
- ``page_on_call``: a deliberately slow pager behind ``block(50)`` backpressure: when it
  falls behind, the alerts partitions pause instead of memory growing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from pydantic import Field

from packetflow import Context, Intent, Topology
from packetflow.streams import (
    Hopping,
    Session,
    Tumbling,
    WindowResult,
    agg,
    block,
    table,
    window,
)

topology = Topology(
    "sensors",
    capabilities={"operator": ["sensor", "configure"], "sensor": ["report"]},
)

# -- intents in --------------------------------------------------------------------------


class Reading(
    Intent, type_name="sensors.Reading", key="device", requires=["report:device/{device}"]
):
    device: str
    site: str
    celsius: float = Field(ge=-80, le=200)
    taken_at: datetime


class Threshold(
    Intent, type_name="sensors.Threshold", key="device", requires=["configure:device/{device}"]
):
    device: str
    max_celsius: float


# -- intents out -------------------------------------------------------------------------


class AverageTemperature(Intent, type_name="sensors.AverageTemperature", key="device"):
    device: str
    start: datetime
    end: datetime
    celsius: float
    readings: int


class PeakTemperature(Intent, type_name="sensors.PeakTemperature", key="device"):
    device: str
    start: datetime
    end: datetime
    celsius: float


class DeviceSession(Intent, type_name="sensors.DeviceSession", key="device"):
    device: str
    start: datetime
    end: datetime
    readings: int


class Overheated(Intent, type_name="sensors.Overheated", key="device", internal=True):
    device: str
    celsius: float
    threshold: float
    window_start: datetime


class Paged(Intent, type_name="sensors.Paged", key="device"):
    device: str
    celsius: float
    window_start: datetime


topology.route(AverageTemperature, "averages")
topology.route(PeakTemperature, "peaks")
topology.route(DeviceSession, "sessions")
topology.route(Overheated, "alerts")
topology.route(Paged, "pages")

DEFAULT_THRESHOLD = 30.0
thresholds = table(topology, Threshold, name="thresholds")  # same key and partitions as readings

# -- windows -----------------------------------------------------------------------------


@window(
    topology,
    Reading,
    topic="readings",
    every=Tumbling(10),
    aggregate=agg.mean("celsius"),
    time="taken_at",
    grace=2,
    emits=[AverageTemperature, Overheated],
)
def ten_second_average(result: WindowResult, ctx: Context) -> list[Intent]:
    """Mean temperature per device every 10 s; raises Overheated above its threshold."""
    device = result.key or "?"
    out: list[Intent] = [
        AverageTemperature(
            device=device,
            start=result.start,
            end=result.end,
            celsius=round(result.value, 2),
            readings=result.count,
        )
    ]
    row = thresholds.get(device)
    limit = row.max_celsius if row is not None else DEFAULT_THRESHOLD
    if result.value > limit:
        out.append(
            Overheated(device=device, celsius=result.value, threshold=limit,
                       window_start=result.start)
        )  # fmt: skip
    return out


@window(
    topology,
    Reading,
    topic="readings",
    every=Hopping(60, 10),
    aggregate=agg.max("celsius"),
    time="taken_at",
    grace=2,
    emits=[PeakTemperature],
)
def minute_peak(result: WindowResult, ctx: Context) -> PeakTemperature:
    """The hottest reading of each device's last minute, every 10 s."""
    return PeakTemperature(
        device=result.key or "?", start=result.start, end=result.end, celsius=result.value
    )


@window(
    topology,
    Reading,
    topic="readings",
    every=Session(30),
    aggregate=agg.count(),
    time="taken_at",
    grace=2,
    emits=[DeviceSession],
)
def device_sessions(result: WindowResult, ctx: Context) -> DeviceSession:
    """A device's reporting session: readings no more than 30 s apart."""
    return DeviceSession(
        device=result.key or "?", start=result.start, end=result.end, readings=result.value
    )


# -- the slow pager ----------------------------------------------------------------------

PAGE_SECONDS = 0.02  # what calling the on-call phone takes


@topology.reactor(Overheated, topic="alerts", backpressure=block(50), emits=[Paged])
async def page_on_call(alert: Overheated, ctx: Context) -> Paged:
    """Pages the on-call engineer; slow, so it runs behind a bounded buffer."""
    await asyncio.sleep(PAGE_SECONDS)
    return Paged(device=alert.device, celsius=alert.celsius, window_start=alert.window_start)


# -- traffic -----------------------------------------------------------------------------

SITES = ("plant-a", "plant-b", "warehouse")
GATEWAY = ("gateway-1", ["sensor:device/*"])
OPERATOR = ("operator-1", ["operator:device/*"])


def simulated_readings(
    count: int, start: float, *, devices: int = 24, seed: int = 11
) -> Iterator[tuple[float, Reading]]:
    """``(arrival time, reading)`` pairs in arrival order: each device reports every ~2 s,
    some run hot, some go quiet for a minute (ending their session), and about 1 in 100
    readings arrives 30 s after it was taken (too late for its windows)."""
    rng = random.Random(seed)
    names = [f"dev-{i:03d}" for i in range(devices)]
    hot = set(rng.sample(names, max(1, devices // 8)))
    base = {d: rng.uniform(18, 24) for d in names}
    quiet_until = dict.fromkeys(names, 0.0)
    now, made = start, 0
    while made < count:
        now += 2.0 / devices
        device = names[made % devices]
        if now < quiet_until[device]:
            made += 1
            continue
        if rng.random() < 0.002:
            quiet_until[device] = now + 60
        celsius = base[device] + rng.gauss(0, 0.6) + (12 if device in hot else 0)
        taken = now - (30 if rng.random() < 0.01 else rng.uniform(0, 0.5))
        made += 1
        yield now, Reading(
            device=device,
            site=SITES[hash(device) % len(SITES)],
            celsius=round(celsius, 2),
            taken_at=datetime.fromtimestamp(taken, UTC),
        )


def demo(count: int = 20_000) -> None:
    """Simulate ``count`` readings on virtual time (a TestDriver) and print what came out."""
    from rich.console import Console
    from rich.table import Table

    from packetflow import TestDriver

    console = Console()
    started = time.perf_counter()
    with TestDriver(topology, start_time=1_767_225_600.0) as driver:  # 2026-01-01T00:00Z
        gateway = driver.issue(*GATEWAY, ttl="30d")
        operator = driver.issue(*OPERATOR, ttl="30d")
        driver.send(Threshold(device="dev-000", max_celsius=20.0), token=operator)
        chunk: list[Intent] = []
        for arrival, reading in simulated_readings(count, driver.clock.time()):
            if arrival > driver.clock.time() + 1:  # deliver a second of readings at a time
                driver.send_many(chunk, token=gateway)
                chunk = []
                driver.advance_time(arrival - driver.clock.time())
            chunk.append(reading)
        driver.send_many(chunk, token=gateway)
        driver.advance_time(120)  # every window closes: sessions, minutes, 10 s windows
        seconds = time.perf_counter() - started
        m = driver.metrics
        counts = Table(title=f"sensors: {count:,} readings simulated in {seconds:.1f}s")
        counts.add_column("topic")
        counts.add_column("records", justify="right")
        for topic in ("averages", "peaks", "sessions", "alerts", "pages", topology.late_topic):
            counts.add_row(topic, f"{len(driver.records(topic)):,}")
        console.print(counts)
        console.print(
            f"page_on_call: buffer peak {m['buffered_peak'].get('page_on_call', 0)} of 50, "
            f"late readings {sum(m['late'].values())}, dead letters {len(driver.dead_letters())}"
            f", denied {len(driver.denied())}"
        )
        hottest = sorted(driver.emitted("averages"), key=lambda a: -a.celsius)[:3]  # type: ignore[attr-defined]
        for a in hottest:
            console.print(
                f"  hottest 10 s: {a.device} {a.celsius:.1f} °C at {a.start:%H:%M:%S}"  # type: ignore[attr-defined]
            )


async def feed(url: str, seconds: float, devices: int = 24) -> int:
    """Publish live readings (taken now) to ``url`` for ``seconds``, signed with the current
    key of the keys directory; returns how many were sent."""
    from packetflow import Client, KeyStore, issue_token

    token = issue_token(*GATEWAY, key=KeyStore().load(), ttl="1h")
    context = Context.new(GATEWAY[0], token=token)
    sent = 0
    began = time.time()
    async with Client(url, topology) as client:
        readings = simulated_readings(10**9, began, devices=devices)
        for arrival, reading in readings:
            if arrival - began > seconds:
                break
            await asyncio.sleep(max(0.0, arrival - time.time()))
            await client.send(reading, context=context)
            sent += 1
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description="The sensors example: simulate or feed.")
    parser.add_argument("--count", type=int, default=20_000, help="readings to simulate")
    parser.add_argument("--feed", metavar="BROKER", help="publish live readings to this broker")
    parser.add_argument("--seconds", type=float, default=60, help="how long to feed")
    args = parser.parse_args()
    if args.feed:
        sent = asyncio.run(feed(args.feed, args.seconds))
        print(f"sent {sent} readings to {args.feed}")
    else:
        demo(args.count)


if __name__ == "__main__":
    main()
