"""The sensors example: its windows, table join, late readings and pager do what its docstring
says, on virtual time (TestDriver) and as a real ``packetflow worker`` on Kafka."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from support.workerproc import REPO, WORKER_KEY, WorkerProcess, cli, new_namespace, wait_records

from packetflow import Client, Context, TestDriver, issue_token
from topologies import sensors
from topologies.sensors import Reading, Threshold

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a window boundary


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def _reading(device: str, celsius: float, at: float) -> Reading:
    return Reading(device=device, site="plant-a", celsius=celsius, taken_at=_at(at))


def test_windows_join_late_readings_and_pages_on_virtual_time() -> None:
    with TestDriver(sensors.topology, start_time=T0) as driver:
        gateway = driver.issue(*sensors.GATEWAY)
        operator = driver.issue(*sensors.OPERATOR)
        driver.send(Threshold(device="dev-a", max_celsius=25.0), token=operator)
        driver.send_many(
            [_reading("dev-a", c, t) for c, t in [(20, 1), (30, 4), (40, 9)]]
            + [_reading("dev-b", c, t) for c, t in [(26, 2), (28, 8)]],
            token=gateway,
        )
        driver.advance_time(13)  # past the first 10 s window's end + 2 s grace (+ idle)
        averages = {a.device: a for a in driver.emitted("averages")}  # type: ignore[attr-defined]
        assert averages["dev-a"].celsius == 30.0 and averages["dev-a"].readings == 3
        assert averages["dev-b"].celsius == 27.0 and averages["dev-b"].readings == 2
        # dev-a's own threshold is 25 (a table row); dev-b has the default 30
        alerts = driver.emitted("alerts")
        assert [(a.device, a.threshold) for a in alerts] == [("dev-a", 25.0)]  # type: ignore[attr-defined]
        assert [p.device for p in driver.emitted("pages")] == ["dev-a"]  # type: ignore[attr-defined]

        # too late for its 10 s window (closed), in time for the open minutes and session
        driver.send(_reading("dev-a", 99, 3), token=gateway)
        (late,) = driver.records(sensors.topology.late_topic)
        assert late.header("pf-reason") == "late" and late.intent == _reading("dev-a", 99, 3)
        assert late.header("pf-reactor") == "ten_second_average"

        driver.advance_time(60)  # a quiet minute: sessions end, hopping minutes close
        sessions = {s.device: s for s in driver.emitted("sessions")}  # type: ignore[attr-defined]
        assert sessions["dev-a"].readings == 4 and sessions["dev-b"].readings == 2
        assert sessions["dev-a"].start == _at(1) and sessions["dev-a"].end == _at(9)
        peaks = [p for p in driver.emitted("peaks") if p.device == "dev-a"]  # type: ignore[attr-defined]
        # readings in [0, 10) fall in six 60 s windows hopping every 10 s; the one ending
        # at 10 s had closed when the late 99 °C arrived
        assert len(peaks) == 6
        assert sorted(p.celsius for p in peaks) == [40, 99, 99, 99, 99, 99]  # type: ignore[attr-defined]


def test_a_reading_without_a_sensor_grant_is_denied() -> None:
    with TestDriver(sensors.topology, start_time=T0) as driver:
        other = driver.issue("gateway-2", ["sensor:device/dev-z"])
        driver.send(_reading("dev-a", 20, 1), token=other)
        (denied,) = driver.denied()
        assert denied.header("pf-missing") == "report:device/dev-a"
        assert driver.state("ten_second_average", "dev-a") is None


def test_the_simulation_runs_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "packetflow", "demo", "topologies.sensors", "--count", "1500"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for topic in ("averages", "peaks", "sessions", "alerts", "pages", "sensors.late"):
        assert topic in done.stdout


def test_topology_show_lists_windows_table_and_backpressure() -> None:
    shown = cli("topology", "show", "topologies.sensors")
    assert shown.returncode == 0, shown.stderr
    for text in (
        "ten_second_average  (window)",
        "tumbling 10s",
        "hopping 60s every 10s",
        "session, gap 30s",
        "thresholds  (table)",
        "backpressure: block(capacity=50)",
        "sensors.late",
    ):
        assert text in shown.stdout, shown.stdout
    mermaid = cli("topology", "show", "topologies.sensors", "--format", "mermaid")
    assert "a_ten_second_average" in mermaid.stdout and "-.->|late|" in mermaid.stdout


@pytest.mark.kafka
async def test_the_worker_closes_windows_on_the_wall_clock(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = copy.copy(sensors.topology)
    topology.namespace = namespace
    worker = spawn("sensors", namespace, module="topologies.sensors")
    await worker.wait_log(r"assigned .*readings\[", timeout=60)
    token = issue_token(*sensors.GATEWAY, key=WORKER_KEY, ttl="1h")
    async with Client(kafka_url, topology) as client:
        began = time.time()
        for i in range(8):  # two devices, a reading each every 0.25 s, taken now
            for device, celsius in (("dev-a", 20.0 + i), ("dev-b", 40.0)):
                reading = Reading(
                    device=device, site="plant-b", celsius=celsius, taken_at=datetime.now(UTC)
                )
                await client.send(reading, context=Context.new("gateway-1", token=token))
            await asyncio.sleep(0.25)
        # nothing more arrives: the windows close as wall-clock time passes
        averages = await wait_records(client, "averages", 2, [worker], timeout=40)
        devices = {r.intent.device for r in averages if r.intent}  # type: ignore[attr-defined]
        assert devices == {"dev-a", "dev-b"}
        total = sum(r.intent.readings for r in await client.read("averages") if r.intent)  # type: ignore[attr-defined]
        assert total <= 16
        pages = await wait_records(client, "pages", 1, [worker], timeout=30)
        assert {p.intent.device for p in pages if p.intent} == {"dev-b"}  # type: ignore[attr-defined]
        assert time.time() - began < 60
    await worker.terminate()
