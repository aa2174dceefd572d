"""``python -m benchmarks [--quick] [--records N] [--only W1,W2,W3,state] [--contestants ...]``

Runs raw aiokafka (the hand-written loop, and its lean floor), Quix Streams (the engine
Python teams pick), faust-streaming and PacketFlow on the same Kafka and the same input,
one at a time, prints a table with PASS/FAIL for the targets and
writes ``benchmarks/results/latest.json``. Exit status 0 when every contestant answered
correctly (whatever the targets say), 1 when one crashed or produced wrong output, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from benchmarks import broker as brokers
from benchmarks import config, report
from benchmarks.config import RunSize
from benchmarks.harness import Harness
from benchmarks.results_model import RunResults
from benchmarks.runner import CONTESTANTS, DEFAULT_CONTESTANTS, DISK_CONTESTANTS, QUIX_PYTHON
from benchmarks.workloads import STATE_RUN, WINDOWED, WORKLOADS
from packetflow.localkafka import LocalKafkaError

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="PacketFlow vs raw aiokafka, Quix Streams and faust-streaming on one Kafka.",
    )
    parser.add_argument("--quick", action="store_true", help="short run (a few minutes)")
    parser.add_argument("--records", type=int, help="input records per throughput run")
    parser.add_argument("--state-accounts", type=int, help="accounts in the W2 state run")
    parser.add_argument(
        "--disk-accounts",
        type=int,
        help="accounts in the W2 state run on the disk store (default: 10,000,000; with "
        "--quick, the state run's)",
    )
    parser.add_argument("--latency-seconds", type=float, help="steady load per latency run")
    everything = ",".join([*WORKLOADS, STATE_RUN])
    parser.add_argument("--only", default=everything, help=f"workloads: {everything}")
    parser.add_argument(
        "--contestants", default=",".join(DEFAULT_CONTESTANTS), help=",".join(CONTESTANTS)
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        metavar="RECORDS_PER_S",
        help="offer this load in the latency runs instead of 50%% of each contestant's max",
    )
    parser.add_argument("--bootstrap", help="host:port (default $PACKETFLOW_TEST_BOOTSTRAP)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the contestants' logs also when all is well"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="run each contestant under py-spy (pip install py-spy), collapsed stacks into DIR;"
        " sampling slows the contestants, so figures from such a run are not comparable",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(highlight=False)
    console.width = max(console.width, 150)  # the table is wide; logs and CI are not ttys
    only = [w.strip() for w in args.only.split(",") if w.strip()]
    contestants = [c.strip() for c in args.contestants.split(",") if c.strip()]
    for w in only:
        if w not in WORKLOADS and w != STATE_RUN:
            console.print(f"error: unknown workload {w!r} ({', '.join([*WORKLOADS, STATE_RUN])})")
            return 2
    unknown = [c for c in contestants if c not in CONTESTANTS]
    if unknown or not contestants:
        console.print(f"error: contestants are {', '.join(CONTESTANTS)}, not {unknown}")
        return 2
    if args.latency_seconds is not None and args.latency_seconds <= config.LATENCY_WARMUP:
        console.print(
            f"error: --latency-seconds must be more than the {config.LATENCY_WARMUP:g} s warm-up"
        )
        return 2
    if "quix" in contestants and not QUIX_PYTHON.exists():
        console.print(
            f"error: Quix Streams runs from {QUIX_PYTHON.parent.parent}: `make bench` creates it"
        )
        return 2
    size = RunSize.quick() if args.quick else RunSize.full()
    size = dataclasses.replace(
        size,
        records=args.records or size.records,
        state_accounts=args.state_accounts or size.state_accounts,
        disk_accounts=args.disk_accounts
        or (args.state_accounts or size.state_accounts if args.quick else size.disk_accounts),
        latency_seconds=args.latency_seconds or size.latency_seconds,
    )
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # rebalance chatter on delete
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    return asyncio.run(run(args, size, only, contestants, console, command.strip()))


async def run(
    args: argparse.Namespace,
    size: RunSize,
    only: list[str],
    contestants: list[str],
    console: Console,
    command: str,
) -> int:
    began = time.monotonic()
    try:
        broker = brokers.find_or_start(args.bootstrap, console.log)
    except LocalKafkaError as exc:
        console.print(f"error: no Kafka to benchmark on: {exc}")
        return 1
    console.log(f"Kafka {broker.kafka_version} at {broker.bootstrap}")
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    prefix = f"bench-{run_id}"
    workdir = Path(tempfile.mkdtemp(prefix=f"packetflow-{prefix}-"))
    results = RunResults(
        mode=("quick" if args.quick else "full") + (" (profiled)" if args.profile else ""),
        command=command,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=report.machine(broker.kafka_version),
        settings={
            "size": dataclasses.asdict(size),
            "producer": config.PRODUCER,
            "consumer": {**config.CONSUMER, "max_records": config.MAX_BATCH},
            "partitions": config.PARTITIONS,
            "latency_load": config.LATENCY_LOAD,
            "latency_warmup_seconds": config.LATENCY_WARMUP,
            "latency_rate_override": args.latency_rate,
            "contestants": contestants,
            "workloads": only,
        },
    )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    try:
        with progress:
            async with Harness(
                broker.bootstrap,
                size,
                contestants,
                prefix=prefix,
                workdir=workdir,
                console=console,
                progress=progress,
                profile=args.profile,
                latency_rate=args.latency_rate,
            ) as harness:
                for w in only:
                    if w in WORKLOADS:
                        await harness.workload(w, results)
                if STATE_RUN in only:
                    state = [c for c in contestants if c in size.state_contestants]
                    if "packetflow" in contestants:
                        state += [c for c in DISK_CONTESTANTS if c not in contestants]
                    state += [c for c in contestants if c in DISK_CONTESTANTS]
                    if state:
                        await harness.state_run(results, state)
    finally:
        broker.stop_if_ours()
    results.notes.append(
        f"latency: {size.latency_seconds:g} s of steady load at "
        f"{config.LATENCY_LOAD:.0%} of each contestant's measured max (or --latency-rate), "
        f"the first {config.LATENCY_WARMUP:g} s not counted in p50/p99"
    )
    if any(w in WINDOWED for w in only):
        results.notes.extend(report.window_notes(results, size))
    if size.state_accounts < config.TARGET_STATE_ACCOUNTS and STATE_RUN in only:
        results.notes.append(
            f"the state run used {size.state_accounts:,} accounts, not "
            f"{config.TARGET_STATE_ACCOUNTS:,}: its RSS target is not judged"
        )
    results.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.targets = report.evaluate(results)
    results.runtime_seconds = round(time.monotonic() - began, 1)
    report.print_tables(results, console)
    report.write_json(results, args.output)
    args.output.with_suffix(".md").write_text(report.markdown(results))
    console.print(f"wrote {args.output} in {results.runtime_seconds:.0f} s: {command}")
    failed = results.failed()
    if failed:
        console.print(f"[red]wrong output or crash: {', '.join(failed)}; logs in {workdir}[/red]")
        return 1
    if args.keep_logs:
        console.print(f"contestants' logs in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
