"""The run: produce each workload's input once, then let each contestant loose on it, alone.

Per workload and contestant: a throughput run (all N records already in the input topic;
the clock runs from the contestant's first consumed record until the harness sees the N-th
output acknowledged, by polling the output topic's end offsets), the output is verified,
then a latency run on a fresh process and fresh topics (a separate load generator offers
50% of that contestant's measured max at a steady rate; the harness times each output
against its input's ``sent_us`` as it reads it). Then W2 again with many distinct accounts,
for worker memory (PacketFlow on the memory store and, with more accounts in full runs, on
the disk store, at-least-once and exactly-once), after which each PacketFlow worker is started
again on its state with ``RESTART_RECORDS`` deposits waiting and timed until it processes
again (``Harness.restart``). Topics are named ``bench-<run id>.*`` and deleted as the run goes.

W3 (windows) differs in three ways. Its input ends with one end-of-input marker per partition
(``config.END_OF_INPUT_TIME``), so every window closes by event time in all three
contestants; the clock stops when the harness sees one result per (account, window) of the
input. Faust closes windows on the wall clock and cannot emit that (see
``contestants/faust_app.py``): its clock stops when its windows table's changelog holds one
update per input record (every deposit folded into its window), then the harness waits
``FAUST_CLEANUP_WAIT`` for faust's cleanup to emit what it will, and checks what can be
checked (``verify.verify_faust_windows``): the table's changelog shows every deposit folded
once into its window, and every result emitted is a piece of its window. And W3 has no
latency run: a result exists only once its window closes, so an input waits for its
window's end plus the grace period (up to 12 s), and faust's for its wall-clock cleanup;
that measures the window, not the engine, and the latency run times one output per input.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from rich.console import Console
from rich.progress import Progress, TaskID

from benchmarks.broker import Admin, read_topic
from benchmarks.config import (
    FAUST_CLEANUP_INTERVAL,
    LATENCY_LOAD,
    LATENCY_WARMUP,
    PARTITIONS,
    RESTART_RECORDS,
    RunSize,
)
from benchmarks.contestants.common import ContestantEnv, faust_windows_changelog
from benchmarks.produce import Expected, deposits, produce
from benchmarks.results_model import Latency, Restart, RunResults, Throughput
from benchmarks.runner import DISK_CONTESTANTS, ContestantProcess
from benchmarks.verify import Verdict, Verifier, verify_faust_windows
from benchmarks.workloads import STATE_RUN, WINDOWED

POLL = 0.01  # seconds between end-offset polls while a throughput run is going
FIRST_OUTPUT_TIMEOUT = 90.0  # start-up + first batch
STALL_TIMEOUT = 45.0  # no new output for this long: the contestant is stuck
DRAIN_TIMEOUT = 30.0  # after the load stops, for the last outputs to arrive
FAUST_CLEANUP_WAIT = 3 * FAUST_CLEANUP_INTERVAL  # W3: faust's cleanup emits what it will


class Failed(Exception):
    """A contestant crashed, stalled or answered wrongly."""


class Harness:
    def __init__(
        self,
        bootstrap: str,
        size: RunSize,
        contestants: Sequence[str],
        *,
        prefix: str,
        workdir: Path,
        console: Console,
        progress: Progress,
        profile: Path | None = None,
        latency_rate: float | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.size = size
        self.contestants = list(contestants)
        self.prefix = prefix
        self.workdir = workdir
        self.console = console
        self.progress = progress
        self.admin = Admin(bootstrap)
        self.profile = profile
        self.latency_rate = latency_rate

    async def __aenter__(self) -> Harness:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.admin.delete_topics_with_prefix(self.prefix)
        await self.admin.close()

    def say(self, message: str) -> None:
        self.console.log(message)

    # -- input ---------------------------------------------------------------------------

    async def produce_input(
        self,
        topic: str,
        records: int,
        accounts: int,
        *,
        distinct: bool,
        seed: int,
        windowed: bool = False,
    ) -> Expected:
        await self.admin.create_topics([topic])
        task = self.progress.add_task(f"producing {topic}", total=records)
        expected = await produce(
            self.bootstrap,
            topic,
            deposits(records, accounts, seed, distinct=distinct),
            records,
            lambda n: self.progress.update(task, completed=n),
            seed=seed,
            windowed=windowed,
        )
        self.progress.remove_task(task)
        windows = (
            f" into {len(expected.windows):,} windows, then {len(expected.open_windows)} "
            "end-of-input markers"
            if windowed
            else ""
        )
        self.say(f"produced {records:,} deposits over {len(expected.balances):,} accounts{windows}")
        return expected

    # -- one workload ----------------------------------------------------------------------

    async def workload(self, workload: str, results: RunResults) -> None:
        """Throughput for every contestant on one shared input, then latency for each."""
        size = self.size
        topic = f"{self.prefix}.{workload}.in"
        windowed = workload in WINDOWED
        accounts = size.window_accounts if windowed else size.accounts
        expected = await self.produce_input(
            topic, size.records, accounts, distinct=False, seed=int(workload[1:]), windowed=windowed
        )
        for name in self.contestants:
            result = await self.throughput(workload, name, topic, expected, accounts)
            results.throughput.append(result)
        for name in self.contestants:
            if windowed:
                break  # no latency run for windows (see the module's docstring)
            rate = results.rate(workload, name)
            if rate is None:
                continue  # failed: no max to take half of
            offered = self.latency_rate or rate * LATENCY_LOAD
            results.latency.append(await self.latency(workload, name, offered))
        await self.admin.delete_topics_with_prefix(f"{self.prefix}.{workload}.")

    async def state_run(self, results: RunResults, contestants: Sequence[str]) -> None:
        """W2 where every record is a new account: the memory its state takes; then each
        PacketFlow worker is started again on that state with deposits waiting, and timed
        until it processes again (memory: the whole changelog replayed; disk: its tail)."""
        runs: dict[int, list[str]] = {}
        for name in contestants:
            disk = name in DISK_CONTESTANTS
            n = self.size.disk_accounts if disk else self.size.state_accounts
            runs.setdefault(n, []).append(name)
        label = f"W2-{STATE_RUN}"
        for n, names in sorted(runs.items()):
            topic = f"{self.prefix}.{STATE_RUN}-{n}.in"
            expected = await self.produce_input(topic, n, n, distinct=True, seed=3)
            for name in names:
                result = await self.throughput("W2", name, topic, expected, n, label=label)
                results.throughput.append(result)
            again = [c for c in names if c.startswith("packetflow") and results.rate(label, c)]
            if again:
                # the first accounts again (same seed: same amounts), so each balance a
                # restarted worker reports shows whether it kept the state
                more = await produce(
                    self.bootstrap,
                    topic,
                    deposits(RESTART_RECORDS, RESTART_RECORDS, 3, distinct=True),
                    RESTART_RECORDS,
                    seed=3,
                )
                for name in again:
                    results.restarts.append(await self.restart(name, topic, expected, more))
            await self.admin.delete_topics_with_prefix(f"{self.prefix}.{STATE_RUN}-{n}.")

    async def restart(
        self, name: str, source: str, expected: Expected, more: Expected
    ) -> Restart:
        """Start ``name`` again on the group it ran the state run with: seconds from its
        process start to its first record, and the balances it reports for ``more``."""
        label = f"W2-{STATE_RUN}"
        group = f"{self.prefix}.{label}.{name}"
        sink = f"{group}.out"
        env = dataclasses.replace(
            self._env("W2", group, source, sink),
            marker=str(self.workdir / f"{group}.restart.first"),
        )
        proc = ContestantProcess(name, env, self.workdir, run=".restart")
        result = Restart(label, name, expected.count, log=str(proc.log_path))
        before = await self.admin.partition_ends(sink)
        task = self.progress.add_task(f"{label} {name}: restart", total=more.count)
        done = self._consumed(group, source) if _exactly_once(name) else None
        base = await self.admin.committed(group, source) if done else sum(before.values())
        started = time.time()
        proc.start()
        try:
            await self._await_outputs(proc, sink, base + more.count, task, done)
            first = proc.first_record_time()
            if first is None:
                raise Failed("wrote no first-record marker")
            result.seconds = first - started
        except Failed as exc:
            result.detail = str(exc)
        finally:
            code = await proc.stop()
        self.progress.remove_task(task)
        result.restored, result.restore_seconds = restores_in(proc.log_path)
        if not result.detail:
            balances: dict[str, int] = {}

            def note(m: Any) -> None:
                out = orjson.loads(m.value)
                balances[out["account"]] = out["balance"]

            await read_topic(self.bootstrap, sink, note, starts=before)
            wrong = [a for a in more.balances if balances.get(a) != 2 * more.balances[a]]
            result.ok = not wrong
            result.detail = (
                f"{len(more.balances):,} balances carried on"
                if result.ok
                else f"{len(wrong):,} of {len(more.balances):,} balances lost their state, "
                f"e.g. {wrong[0]}: {balances.get(wrong[0])}, want {2 * more.balances[wrong[0]]}"
            )
        self._said(
            result,
            proc,
            code,
            f"{label} {name} restart",
            f"{label} {name} restarted: processing again after {result.seconds or 0:.1f} s "
            f"({result.restored or 0:,} changelog records replayed)",
        )
        return result

    # -- throughput --------------------------------------------------------------------------

    def _env(self, workload: str, group: str, source: str, sink: str) -> ContestantEnv:
        return ContestantEnv(
            workload=workload,
            bootstrap=self.bootstrap,
            input=source,
            output=sink,
            group=group,
            marker=str(self.workdir / f"{group}.first"),
        )

    async def throughput(
        self,
        workload: str,
        name: str,
        source: str,
        expected: Expected,
        accounts: int,
        *,
        label: str | None = None,
    ) -> Throughput:
        label = label or workload
        group = f"{self.prefix}.{label}.{name}"
        sink = f"{group}.out"
        await self.admin.create_topics([sink])
        # what marks the end: the outputs, or (faust's W3) the windows table's changelog
        table = faust_windows_changelog(group) if self._faust_table(workload, name) else None
        watched, count = (table, expected.inputs) if table else (sink, expected.outputs)
        done = self._consumed(group, source) if _exactly_once(name) else None
        if table:
            await self.admin.create_topics([table], compact=True)  # as faust would
        proc = ContestantProcess(
            name, self._env(workload, group, source, sink), self.workdir, self.profile
        )
        result = Throughput(label, name, expected.count, accounts, log=str(proc.log_path))
        task = self.progress.add_task(f"{label} {name}: throughput", total=count)
        proc.start()
        try:
            end = await self._await_outputs(proc, watched, count, task, done)
            if table:
                await asyncio.sleep(FAUST_CLEANUP_WAIT)
            result.peak_rss, result.cpu_seconds = proc.peak_rss(), proc.cpu_seconds()
            start, cpu_start = proc.first_record_time(), proc.cpu_at_first_record()
            if start is None:
                raise Failed("wrote no first-record marker")
            if cpu_start is not None:
                result.cpu_us_per_record = (result.cpu_seconds - cpu_start) / expected.count * 1e6
            result.seconds = end - start
            result.rate = expected.count / result.seconds
        except Failed as exc:
            result.detail = str(exc)
        finally:
            code = await proc.stop()
        if not result.detail:
            self.progress.update(task, description=f"{label} {name}: verifying")
            verdict = await self._verify(workload, sink, expected, table)
            result.ok, result.detail = verdict.ok, verdict.detail
            if table:
                result.caveat = "faust-windows"
        self.progress.remove_task(task)
        self._said(
            result,
            proc,
            code,
            f"{label} {name}",
            f"{label} {name}: {result.rate or 0:,.0f} records/s, "
            f"peak RSS {(result.peak_rss or 0) / 2**20:,.0f} MiB ({result.detail})",
        )
        return result

    def _said(
        self,
        result: Throughput | Restart,
        proc: ContestantProcess,
        code: int | None,
        what: str,
        success: str,
    ) -> None:
        """Say how a contestant's run went: ``success``, or ``what`` failed, with its exit
        code, its log (named in the result too) and the log's last lines."""
        if result.ok:
            self.say(success)
            return
        result.detail += f" (exit {code}; log {proc.log_path})"
        self.say(f"[red]{what}: FAIL: {result.detail}[/red]\n{proc.log_tail()}")

    def _consumed(self, group: str, source: str) -> Callable[[], Awaitable[int]]:
        """How many input records ``group`` has committed: an exactly-once contestant's
        progress (its output topic's offsets also count transaction markers)."""

        async def consumed() -> int:
            return await self.admin.committed(group, source)

        return consumed

    @staticmethod
    def _faust_table(workload: str, name: str) -> bool:
        return workload in WINDOWED and name == "faust"

    async def _verify(
        self, workload: str, sink: str, expected: Expected, table: str | None = None
    ) -> Verdict:
        """The output checked; with ``table`` (faust's W3), against the table's changelog."""
        if table is not None:
            changelog: list[tuple[bytes | None, bytes | None]] = []
            outputs: list[tuple[Sequence[tuple[str, bytes]], bytes]] = []
            await read_topic(self.bootstrap, table, lambda m: changelog.append((m.key, m.value)))
            await read_topic(self.bootstrap, sink, lambda m: outputs.append((m.headers, m.value)))
            return verify_faust_windows(changelog, outputs, expected)
        verifier = Verifier(workload, expected)
        await read_topic(self.bootstrap, sink, lambda m: verifier.add(m.headers, m.value))
        return verifier.verdict()

    async def _await_outputs(
        self,
        proc: ContestantProcess,
        sink: str,
        count: int,
        task: TaskID,
        done: Callable[[], Awaitable[int]] | None = None,
    ) -> float:
        """The wall-clock time the harness saw ``count`` outputs acknowledged (or, with
        ``done``, when it says ``count``)."""
        started = last_change = time.monotonic()
        seen = 0
        while True:
            code = proc.exit_code()
            if code is not None:
                raise Failed(f"exited with code {code} after {seen:,} outputs")
            now_seen = await (done() if done else self.admin.end_offsets(sink))
            now = time.time()
            if now_seen >= count:
                self.progress.update(task, completed=count)
                return now
            if now_seen != seen:
                seen, last_change = now_seen, time.monotonic()
                self.progress.update(task, completed=seen)
            waited = time.monotonic() - last_change
            if (seen == 0 and time.monotonic() - started > FIRST_OUTPUT_TIMEOUT) or (
                seen and waited > STALL_TIMEOUT
            ):
                raise Failed(f"stalled at {seen:,} of {count:,} outputs")
            await asyncio.sleep(POLL)

    # -- latency -------------------------------------------------------------------------------

    async def latency(self, workload: str, name: str, rate: float) -> Latency:
        seconds = self.size.latency_seconds
        group = f"{self.prefix}.{workload}.{name}.lat"
        source, sink = f"{group}.in", f"{group}.out"
        await self.admin.create_topics([source, sink])
        proc = ContestantProcess(
            name, self._env(workload, group, source, sink), self.workdir, self.profile
        )
        result = Latency(workload, name, offered_rate=rate, seconds=seconds, log=str(proc.log_path))
        task = self.progress.add_task(
            f"{workload} {name}: latency at {rate:,.0f}/s", total=int(rate * seconds)
        )
        proc.start()
        timer = _OutputTimer(self.bootstrap, sink)
        expected = Expected()
        warm_until = 0
        try:
            await self._await_group(proc, group)
            await timer.start()
            summary = await self._offer_load(source, rate, seconds, timer, task)
            result.achieved_rate = float(summary["rate"])
            warm_until = int(summary["started_us"]) + int(LATENCY_WARMUP * 1e6)
            want = int(summary["count"])
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while len(timer.latencies) < want and time.monotonic() < deadline:
                if proc.exit_code() is not None:
                    raise Failed(f"exited with code {proc.exit_code()}")
                self.progress.update(task, completed=len(timer.latencies))
                await asyncio.sleep(0.05)
            result.peak_rss = proc.peak_rss()
            if len(timer.latencies) < want:
                raise Failed(f"saw {len(timer.latencies):,} of {want:,} outputs")
            expected = Expected(want, int(summary["amount_sum"]), dict(summary["balances"]))
        except Failed as exc:
            result.detail = str(exc)
        finally:
            await timer.stop()
            code = await proc.stop()
            self.progress.remove_task(task)
        timer.dump(self.workdir / f"{group}.latency.json")
        if not result.detail:
            verdict = await self._verify(workload, sink, expected)
            result.ok, result.detail = verdict.ok, verdict.detail
            everything = sorted(timer.latencies)
            result.p99_all_ms = _percentile(everything, 0.99) / 1000
            lat, to_output = timer.steady(warm_until)
            result.samples = len(lat)
            result.p50_ms = statistics.median(lat) / 1000
            result.p99_ms = _percentile(lat, 0.99) / 1000
            result.max_ms = lat[-1] / 1000
            result.p50_to_output_ms = statistics.median(to_output) / 1000
        if result.ok:
            self.say(
                f"{workload} {name}: at {result.achieved_rate:,.0f}/s p50 {result.p50_ms:.1f} ms, "
                f"p99 {result.p99_ms:.1f} ms"
            )
        else:
            result.detail += f" (exit {code}; log {proc.log_path})"
            self.say(f"[red]{workload} {name} latency: FAIL: {result.detail}[/red]")
        await self.admin.delete_topics_with_prefix(group + ".")
        return result

    async def _await_group(self, proc: ContestantProcess, group: str) -> None:
        """Until the contestant's consumer group holds its partitions (then a settling second)."""
        deadline = time.monotonic() + FIRST_OUTPUT_TIMEOUT
        while not await self.admin.group_stable(group):
            if proc.exit_code() is not None:
                raise Failed(f"exited with code {proc.exit_code()} while starting")
            if time.monotonic() > deadline:
                raise Failed("its consumer group never settled")
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)

    async def _offer_load(
        self, topic: str, rate: float, seconds: float, timer: _OutputTimer, task: TaskID
    ) -> dict[str, object]:
        load = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.loadgen",
            "--bootstrap", self.bootstrap, "--topic", topic,
            "--rate", f"{rate:.1f}", "--seconds", str(seconds),
            "--accounts", str(self.size.accounts),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        communicate = asyncio.ensure_future(load.communicate())
        while not communicate.done():
            self.progress.update(task, completed=len(timer.latencies))
            await asyncio.sleep(0.1)
        out, err = communicate.result()
        if load.returncode != 0:
            raise Failed(f"load generator failed: {err.decode(errors='replace')[-500:]}")
        summary: dict[str, object] = orjson.loads(out)
        return summary


def _percentile(ordered: list[int], share: float) -> int:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


class _OutputTimer:
    """Reads an output topic as outputs arrive; latency = now - the input's ``sent_us``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.sent: list[int] = []  # each output's input's sent_us
        self.latencies: list[int] = []  # microseconds, in the same order
        self.to_output: list[int] = []  # microseconds from the input's send to the output's
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # "latest" would race the seek to the beginning
            client_id="bench-latency",
        )
        self._topic = topic
        self._task: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        await self._consumer.start()
        self._started = True
        tps = [TopicPartition(self._topic, p) for p in range(PARTITIONS)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        latencies, loads = self.latencies, orjson.loads
        while True:
            batch = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            now_us = int(time.time() * 1e6)
            for messages in batch.values():
                for m in messages:
                    sent = loads(m.value)["sent_us"]
                    latencies.append(now_us - sent)
                    self.sent.append(sent)
                    self.to_output.append(m.timestamp * 1000 - sent)

    def dump(self, path: Path) -> None:
        """Every sample, for a closer look: ``[[sent_us, latency_us, to_output_us], ...]``."""
        path.write_bytes(
            orjson.dumps(list(zip(self.sent, self.latencies, self.to_output, strict=True)))
        )

    def steady(self, since_us: int) -> tuple[list[int], list[int]]:
        """Latencies and times-to-output of the inputs sent from ``since_us`` on, sorted."""
        keep = [i for i, sent in enumerate(self.sent) if sent >= since_us]
        return (
            sorted(self.latencies[i] for i in keep),
            sorted(self.to_output[i] for i in keep),
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._started:
            await self._consumer.stop()


def _exactly_once(name: str) -> bool:
    return name.startswith("packetflow") and "eos" in name.split("-")


_RESTORED = re.compile(r"restored (\d+) changelog records of \S+ in ([\d.]+) s")


def restores_in(log: Path) -> tuple[int | None, float | None]:
    """The changelog records a PacketFlow worker's log says it replayed, and in how long."""
    try:
        found = _RESTORED.findall(log.read_text(errors="replace"))
    except OSError:
        return None, None
    if not found:
        return None, None
    return sum(int(n) for n, _ in found), sum(float(s) for _, s in found)
