"""One contestant process: how it is started, watched, measured (/proc) and stopped.

Every contestant runs alone in its own process, so its peak RSS (``VmHWM``) and CPU time
are its own. It writes the wall-clock time of its first consumed record to a marker file;
that is where its throughput clock starts, the same way for all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from benchmarks.config import packetflow_url
from benchmarks.contestants.common import ContestantEnv
from packetflow.engine.transport import KAFKA_CLIENTS

CONTESTANTS = ("raw", "raw-lean", "quix", "faust", "packetflow", "packetflow-aiokafka",
               "packetflow-librdkafka", "packetflow-disk", "packetflow-disk-eos",
               "packetflow-otel")  # fmt: skip
# W2 on the disk store (at-least-once, exactly-once): run with the state run, beside the
# memory store's "packetflow", whenever "packetflow" is a contestant
DISK_CONTESTANTS = ("packetflow-disk", "packetflow-disk-eos")
DEFAULT_CONTESTANTS = ("raw", "raw-lean", "quix", "faust", "packetflow")
REPO = Path(__file__).resolve().parent.parent
# Quix Streams pins versions the engine does not use: it runs from its own environment
QUIX_PYTHON = REPO / ".venv-quix" / "bin" / "python"


def command(name: str, env: ContestantEnv) -> list[str]:
    py = sys.executable
    if name == "raw":
        return [py, "-m", "benchmarks.contestants.raw"]
    if name == "raw-lean":
        return [py, "-m", "benchmarks.contestants.raw", "--lean"]
    if name == "quix":
        return [str(QUIX_PYTHON), "-m", "benchmarks.contestants.quix_app"]
    if name == "faust":
        # faust's worker command starts its web server on 0.0.0.0:6066 unless told not to
        return [
            py,
            "-m",
            "benchmarks.contestants.faust_app",
            "worker",
            "-l",
            "warn",
            "--without-web",
            "--web-bind",
            "127.0.0.1",
        ]
    if name.startswith("packetflow"):  # packetflow[-client][-disk][-eos] (see ContestantProcess)
        client = next((p for p in name.split("-") if p in KAFKA_CLIENTS), None)
        traced = ["--otel"] if "otel" in name.split("-") else []
        return [
            py, "-m", "packetflow", "worker", "benchmarks.pf_topology",
            "--broker", packetflow_url(env.bootstrap, client), *traced,
        ]  # fmt: skip
    raise ValueError(f"unknown contestant {name!r}: pick from {', '.join(CONTESTANTS)}")


class ContestantProcess:
    """A contestant's process; with ``profile``, run under ``py-spy record`` into that folder."""

    def __init__(
        self,
        name: str,
        env: ContestantEnv,
        workdir: Path,
        profile: Path | None = None,
        *,
        run: str = "",
    ) -> None:
        """``run`` names this run of the contestant among others on the same group (its log)."""
        self.name = name
        self.env = env
        self.log_path = workdir / f"{env.group}{run}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.workdir = workdir
        self.profile = profile

    def environment(self) -> dict[str, str]:
        """The contestant's environment: ours without PACKETFLOW_*, its settings, and for a
        ``packetflow...-disk`` its state directory, for a ``...-eos`` exactly-once."""
        environ = {k: v for k, v in os.environ.items() if not k.startswith("PACKETFLOW_")}
        environ.update(self.env.as_env())
        environ["BENCH_WORKDIR"] = str(self.workdir)
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
        )
        variant = self.name.split("-")
        if self.name.startswith("packetflow") and "disk" in variant:
            environ["PACKETFLOW_STATE_DIR"] = str(self.state_dir)
        if self.name.startswith("packetflow") and "eos" in variant:
            environ["BENCH_GUARANTEE"] = "exactly_once"
        if self.name.startswith("packetflow") and "otel" in variant:
            # spans made for every record and dropped: tracing's cost in the worker itself
            environ["OTEL_TRACES_EXPORTER"] = "none"
        return environ

    def start(self) -> None:
        environ = self.environment()
        argv = command(self.name, self.env)
        if self.profile is not None:
            self.profile.mkdir(parents=True, exist_ok=True)
            out = self.profile / f"{self.env.group}.collapsed.txt"
            spy = Path(sys.executable).with_name("py-spy")
            argv = [str(spy), "record", "--nonblocking", "--rate", "250", "--format", "raw",
                    "-o", str(out), "--", *argv]  # fmt: skip
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def state_dir(self) -> Path:
        """Where a disk-store PacketFlow keeps its state (the same for every run of a group)."""
        return self.workdir / f"{self.env.group}.state"

    @property
    def pid(self) -> int:
        """The contestant's own pid (under py-spy: py-spy's child)."""
        if self._proc is None:
            raise RuntimeError("not started")
        if self.profile is None:
            return self._proc.pid
        with contextlib.suppress(OSError, ValueError, IndexError):
            task = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
            return int(task.read_text().split()[0])
        return self._proc.pid

    def exit_code(self) -> int | None:
        """None while running."""
        return None if self._proc is None else self._proc.poll()

    def first_record_time(self) -> float | None:
        """The wall-clock time it consumed its first record (None: not yet)."""
        return self._marker(0)

    def cpu_at_first_record(self) -> float | None:
        """The process's CPU seconds when it consumed its first record (start-up before)."""
        return self._marker(1)

    def _marker(self, field: int) -> float | None:
        """A field of the first-record marker: ``<wall time> <CPU seconds>``."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            return float(Path(self.env.marker).read_text().split()[field])
        return None

    def peak_rss(self) -> int:
        """``VmHWM`` in bytes: the most resident memory the process ever had."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            # under py-spy, stop its child: py-spy writes the profile when the child exits
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""
