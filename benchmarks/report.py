"""Targets, the machine, and the results as rich tables, Markdown and JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import platform
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from benchmarks.config import (
    CPU_WORKLOADS,
    FAUST_CLEANUP_INTERVAL,
    GRACE_SECONDS,
    STRETCH_VS_QUIX,
    TARGET_CPU_US,
    TARGET_DISK_ACCOUNTS,
    TARGET_P99_MS,
    TARGET_RESTART_SECONDS,
    TARGET_STATE_ACCOUNTS,
    TARGET_STATE_RSS,
    TARGET_VS_FAUST,
    TARGET_VS_QUIX,
    WINDOW_SECONDS,
    RunSize,
)
from benchmarks.results_model import Latency, RunResults, Target, Throughput
from benchmarks.runner import QUIX_PYTHON
from benchmarks.workloads import STATE_RUN, WINDOWED, WORKLOADS

PF = "packetflow"
PF_DISK = "packetflow-disk"  # at-least-once on the disk store; its -eos twin is reported beside


def machine(kafka_version: str) -> dict[str, object]:
    import psutil  # the bench extra's: the tests read this module without it

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version(), "kafka": kafka_version}
    for package in ("packetflow", "aiokafka", "faust-streaming", "pydantic", "orjson"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["quixstreams"] = _quix_version()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def _quix_version() -> str:
    """Quix Streams runs from its own environment (benchmarks/runner.py)."""
    for site in sorted(QUIX_PYTHON.parent.parent.glob("lib/python*/site-packages")):
        for dist in site.glob("quixstreams-*.dist-info"):
            return dist.name.removeprefix("quixstreams-").removesuffix(".dist-info")
    return "not installed"


# -- targets --------------------------------------------------------------------------------


def _ratio_target(
    results: RunResults, workload: str, other: str, wanted: float, stretch: float | None = None
) -> Target:
    label = f"{workload}: PacketFlow >= {wanted:g}x {other}"
    want = f">= {wanted:g}x" + (f" (stretch {stretch:g}x)" if stretch else "")
    pf, base = results.rate(workload, PF), results.rate(workload, other)
    if pf is None or base is None:
        return Target(label, "not measured", want, "n/a")
    ratio = pf / base
    return Target(label, f"{ratio:.2f}x", want, "PASS" if ratio >= wanted else "FAIL")


def _cpu_target(results: RunResults, workload: str) -> Target:
    label = f"{workload}: PacketFlow CPU per record"
    wanted = f"<= {TARGET_CPU_US:g} µs"
    for t in results.throughput:
        if t.workload == workload and t.contestant == PF and t.ok and t.cpu_us_per_record:
            ok = t.cpu_us_per_record <= TARGET_CPU_US
            return Target(label, f"{t.cpu_us_per_record:.1f} µs", wanted, "PASS" if ok else "FAIL")
    return Target(label, "not measured", wanted, "n/a")


def _latency_target(results: RunResults, workload: str) -> Target:
    label = f"{workload}: PacketFlow p99 at 50% load"
    wanted = f"<= {TARGET_P99_MS:g} ms"
    for lat in results.latency:
        if lat.workload == workload and lat.contestant == PF and lat.ok and lat.p99_ms is not None:
            ok = lat.p99_ms <= TARGET_P99_MS
            return Target(label, f"{lat.p99_ms:.1f} ms", wanted, "PASS" if ok else "FAIL")
    return Target(label, "not measured", wanted, "n/a")


def _sized(
    label: str, wanted: str, measured: str | None, accounts: int, needed: int, ok: bool
) -> Target:
    """A target judged only at the size it names (``needed`` accounts); smaller runs are
    shown with their size."""
    if measured is None:
        return Target(label, "not measured", wanted, "n/a")
    if accounts < needed:
        return Target(label, f"{measured} at {accounts:,} accounts", wanted, "n/a")
    return Target(label, measured, wanted, "PASS" if ok else "FAIL")


def _rss(row: Throughput | None) -> str | None:
    return None if row is None or not row.peak_rss else f"{row.peak_rss / 2**20:,.0f} MiB"


def _state_target(results: RunResults) -> Target:
    row = next(
        (
            t
            for t in results.throughput
            if t.workload == f"W2-{STATE_RUN}" and t.contestant == PF and t.ok and t.peak_rss
        ),
        None,
    )
    return _sized(
        f"W2 with {TARGET_STATE_ACCOUNTS:,} accounts: PacketFlow RSS",
        f"<= {TARGET_STATE_RSS / 2**30:g} GiB",
        _rss(row),
        row.accounts if row else 0,
        TARGET_STATE_ACCOUNTS,
        row is not None and (row.peak_rss or 0) <= TARGET_STATE_RSS,
    )


def _disk_targets(results: RunResults) -> list[Target]:
    """The disk store with TARGET_DISK_ACCOUNTS accounts: RSS, and how soon a restarted
    at-least-once worker processes again (smaller runs are shown, not judged)."""
    row = next(
        (t for t in results.throughput if t.contestant == PF_DISK and t.ok and t.peak_rss), None
    )
    restart = next((r for r in results.restarts if r.contestant == PF_DISK and r.ok), None)
    seconds = None if restart is None else restart.seconds
    return [
        _sized(
            f"W2 with {TARGET_DISK_ACCOUNTS:,} accounts on disk: PacketFlow RSS",
            f"<= {TARGET_STATE_RSS / 2**30:g} GiB",
            _rss(row),
            row.accounts if row else 0,
            TARGET_DISK_ACCOUNTS,
            row is not None and (row.peak_rss or 0) <= TARGET_STATE_RSS,
        ),
        _sized(
            f"W2 with {TARGET_DISK_ACCOUNTS:,} accounts on disk: restart, processing again",
            f"<= {TARGET_RESTART_SECONDS:g} s",
            None if seconds is None else f"{seconds:.1f} s",
            restart.accounts if restart else 0,
            TARGET_DISK_ACCOUNTS,
            seconds is not None and seconds <= TARGET_RESTART_SECONDS,
        ),
    ]


def evaluate(results: RunResults) -> list[Target]:
    targets = []
    for w in WORKLOADS:
        if any(t.workload == w for t in results.throughput):
            targets.append(_ratio_target(results, w, "quix", TARGET_VS_QUIX, STRETCH_VS_QUIX))
            targets.append(_ratio_target(results, w, "faust", TARGET_VS_FAUST))
            if w in CPU_WORKLOADS:
                targets.append(_cpu_target(results, w))
            if w not in WINDOWED:  # no latency run for windows
                targets.append(_latency_target(results, w))
    if any(t.workload == f"W2-{STATE_RUN}" for t in results.throughput):
        targets.append(_state_target(results))
    if any(t.contestant == PF_DISK for t in results.throughput):
        targets.extend(_disk_targets(results))
    return targets


# -- tables ---------------------------------------------------------------------------------

COLUMNS = (
    "workload", "contestant", "records/s", "vs quix", "vs raw", "vs faust", "load (rec/s)",
    "p50 ms", "p99 ms", "peak RSS MiB", "CPU µs/rec", "output",
)  # fmt: skip


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def rows(results: RunResults) -> list[list[str]]:
    out = []
    for t in results.throughput:
        base = t.workload.split("-")[0]
        lat = _latency_of(results, t)
        raw, faust = results.rate(t.workload, "raw"), results.rate(t.workload, "faust")
        quix = results.rate(t.workload, "quix")
        name = t.workload if base == t.workload else f"{base} {t.accounts:,} accounts"
        out.append(
            [
                name,
                t.contestant,
                _fmt(t.rate, ",.0f") if t.ok else "FAIL",
                _fmt(t.rate / quix if t.ok and t.rate and quix else None, ".2f"),
                _fmt(t.rate / raw if t.ok and t.rate and raw else None, ".2f"),
                _fmt(t.rate / faust if t.ok and t.rate and faust else None, ".1f"),
                _fmt(lat.achieved_rate if lat else None, ",.0f"),
                _fmt(lat.p50_ms if lat and lat.ok else None, ".1f"),
                _fmt(lat.p99_ms if lat and lat.ok else None, ".1f"),
                _fmt(t.peak_rss / 2**20 if t.peak_rss else None, ",.0f"),
                _fmt(t.cpu_us_per_record, ".1f"),
                _output(t, lat),
            ]
        )
    return out


def _output(t: Throughput, lat: Latency | None) -> str:
    if not t.ok:
        return "FAIL"
    if t.caveat == "faust-windows":
        return "table ok, results partial (note)"
    return "ok" + ("" if not lat or lat.ok else " (latency run FAIL)")


def window_notes(results: RunResults, size: RunSize) -> list[str]:
    """What a W3 row means, and what faust's W3 did."""
    notes = [
        f"W3: {size.records:,} deposits over {size.window_accounts:,} accounts with fixed event "
        f"times, {WINDOW_SECONDS} s tumbling windows, {GRACE_SECONDS} s grace; the input ends "
        "with one end-of-input marker per partition (event time 2100-01-01), which moves each "
        "partition's watermark past every window, so raw, Quix and PacketFlow close all of "
        "them by their own event-time rule (no flush at the end); records/s runs to the last "
        "window's result acknowledged. No latency run for W3: a result exists only once its window "
        f"closes, so an input waits for its window's end plus grace (up to "
        f"{WINDOW_SECONDS + GRACE_SECONDS} s), which measures the window, not the engine",
    ]
    for t in results.throughput:
        if t.caveat == "faust-windows":
            notes.append(
                "W3 faust: faust expires windows on the wall clock (every "
                f"table_cleanup_interval, {FAUST_CLEANUP_INTERVAL:g} s here), not on event time: "
                "with these past event "
                "times each cleanup closes every window seen so far, and later deposits start "
                "it afresh; and on_window_close skips every window starting at or before the "
                "newest one it closed on any partition. So it cannot emit one result per "
                "window (benchmarks/contestants/faust_app.py). Its records/s runs to its "
                "windows table's changelog holding every deposit's update (emission not "
                "included); checked: the pieces its table split each window into add up to the "
                "window's count and sum, and each result emitted is one of those pieces. "
                f"{t.detail}"
            )
    return notes


def _latency_of(results: RunResults, t: Throughput) -> Latency | None:
    for lat in results.latency:
        if lat.workload == t.workload and lat.contestant == t.contestant:
            return lat
    return None


RESTART_COLUMNS = (
    "restart", "contestant", "accounts", "processing again s", "changelog records replayed",
    "replay s", "state",
)  # fmt: skip


def restart_rows(results: RunResults) -> list[list[str]]:
    return [
        [
            {"packetflow": "memory store, whole changelog"}.get(
                r.contestant,
                "disk store, exactly-once" if r.contestant.endswith("-eos") else "disk store",
            ),
            r.contestant,
            f"{r.accounts:,}",
            _fmt(r.seconds, ".1f") if r.ok else "FAIL",
            _fmt(r.restored, ",d") if r.restored is not None else "-",
            _fmt(r.restore_seconds, ".2f"),
            r.detail,
        ]
        for r in results.restarts
    ]


def print_tables(results: RunResults, console: Console) -> None:
    table = Table(title=f"PacketFlow benchmark ({results.mode})", title_justify="left")
    for col in COLUMNS:
        table.add_column(
            col, justify="left" if col in ("workload", "contestant", "output") else "right"
        )
    for row in rows(results):
        style = "bold" if row[1] == PF else None
        table.add_row(*row, style=style)
    console.print(table)
    if results.restarts:
        restarts = Table(title="A worker started again on its state", title_justify="left")
        for col in RESTART_COLUMNS:
            restarts.add_column(col, justify="right" if col.endswith(("s", "replayed")) else "left")
        for row in restart_rows(results):
            restarts.add_row(*row)
        console.print(restarts)
    targets = Table(title="Targets", title_justify="left")
    for col in ("target", "measured", "wanted", "result"):
        targets.add_column(col)
    for t in results.targets:
        colour = {"PASS": "green", "FAIL": "red"}.get(t.status, "yellow")
        targets.add_row(t.name, t.measured, t.wanted, f"[{colour}]{t.status}[/{colour}]")
    console.print(targets)
    for note in results.notes:
        console.print(f"note: {note}")


def markdown(results: RunResults) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    if results.restarts:
        lines += ["", "| " + " | ".join(RESTART_COLUMNS) + " |"]
        lines += ["|" + "---|" * len(RESTART_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in restart_rows(results)]
    lines += ["", "| target | measured | wanted | result |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.measured} | {t.wanted} | {t.status} |" for t in results.targets]
    lines += ["", *(f"- {note}" for note in results.notes)] if results.notes else []
    return "\n".join(lines) + "\n"


def write_json(results: RunResults, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(dataclasses.asdict(results), option=orjson.OPT_INDENT_2) + b"\n")
