"""``python -m packetflow worker topologies.orders`` as real subprocesses, for the Kafka tests.

Shared by the process tests (tests/processes) and tests/behaviour/test_security.py (the
``spawn`` fixture in conftest.py starts the processes and kills whatever is left at
teardown). Each test runs in its own ``$PACKETFLOW_NAMESPACE`` (:func:`new_namespace`,
:func:`orders_topology`), so no two tests share topics or consumer groups. Every wait is
bounded, and a failed one shows the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from packetflow import Client, KeyStore, Received, Topology
from topologies import orders

REPO = Path(__file__).resolve().parents[2]

# topologies.orders takes signed tokens only: the worker processes (and the CLI) trust the key
# generated here, through $PACKETFLOW_KEYS; the tests sign their tokens with it. The worker
# secret there seals what the workers emit for each other (TransferCredit, the ledger).
_KEYS = tempfile.TemporaryDirectory(prefix="pf-test-keys-")
WORKER_KEYS_DIR = _KEYS.name
WORKER_KEY = KeyStore(WORKER_KEYS_DIR).generate("tests")
KeyStore(WORKER_KEYS_DIR).write_secret()  # the workers seal internal intents with it


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def orders_topology(namespace: str) -> Topology:
    """The orders topology under ``namespace``, without touching the module's shared object."""
    return topology_in(namespace, orders.topology)


def topology_in(namespace: str, topology: Topology) -> Topology:
    """A copy of ``topology`` under ``namespace`` (a worker process with
    ``$PACKETFLOW_NAMESPACE`` runs the same), without touching the shared object."""
    out = copy.copy(topology)
    out.namespace = namespace
    return out


def worker_env(namespace: str | None = None) -> dict[str, str]:
    """A subprocess environment: none of this one's ``PACKETFLOW_*`` settings (but
    ``$PACKETFLOW_HOME``), unbuffered output, the test keys and ``namespace`` if given."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith("PACKETFLOW_") or k == "PACKETFLOW_HOME"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PACKETFLOW_KEYS"] = WORKER_KEYS_DIR
    if namespace:
        env["PACKETFLOW_NAMESPACE"] = namespace
    return env


def assert_user_error(result: subprocess.CompletedProcess[str], pattern: str) -> str:
    """``result`` is a user error: exit 2, one ``error: ...`` line matching ``pattern`` on
    stderr and no traceback; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def cli(
    *args: str, namespace: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m packetflow ARGS`` in the repository, with :func:`worker_env`."""
    return subprocess.run(
        [sys.executable, "-m", "packetflow", *args],
        cwd=REPO, env=worker_env(namespace), capture_output=True, text=True, timeout=timeout,
    )


class WorkerProcess:
    """``python -m packetflow worker MODULE`` (default topologies.orders), its log in a file."""

    def __init__(
        self,
        name: str,
        namespace: str,
        url: str,
        log_dir: Path,
        module: str = "topologies.orders",
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "packetflow", "worker", module,
             "--broker", url, "--log-level", "info", *args],
            cwd=REPO, env={**worker_env(namespace), **(env or {})}, stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}"
            )

    async def wait_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of ``pattern`` in the log; fails if the worker exits first."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {pattern!r} after {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.02)

    def assignment(self) -> set[str]:
        """The partitions of the latest ``assigned`` line (eager rebalances reassign all)."""
        lines = re.findall(r"packetflow\.worker: (assigned|revoked) (.*)", self.log())
        if not lines or lines[-1][0] != "assigned":
            return set()
        return set(lines[-1][1].split(", "))

    async def terminate(self, timeout: float = 15.0) -> float:
        """SIGTERM; wait for a clean exit (code 0) within ``timeout``; return seconds taken."""
        self._check_alive()
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        while self.proc.poll() is None:
            if time.monotonic() - began > timeout:
                self.kill()
                raise AssertionError(f"{self.name} still running {timeout}s after SIGTERM:\n"
                                     f"{self.log()}")
            await asyncio.sleep(0.05)
        took = time.monotonic() - began
        code = self.proc.returncode
        assert code == 0, f"{self.name} exited {code}:\n{self.log()}"
        return took

    def final_counts(self) -> dict[str, Any]:
        """The counters the worker logged on its way out."""
        found = re.search(r"final counts: (\{.*\})", self.log())
        assert found, f"{self.name} logged no final counts:\n{self.log()}"
        return dict(json.loads(found.group(1)))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._log.close()


def logs(workers: Iterable[WorkerProcess]) -> str:
    return "\n".join(f"--- {w.name}:\n{w.log()}" for w in workers)


async def wait_records(
    client: Client,
    topic: str,
    count: int,
    workers: Iterable[WorkerProcess],
    timeout: float = 30.0,
) -> list[Received]:
    """``client.wait_for(topic, count)``, failing with the workers' logs."""
    try:
        return await client.wait_for(topic, count, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{logs(workers)}") from None


async def wait_split(
    workers: Sequence[WorkerProcess], every: set[str], timeout: float, *, disjoint: bool = True
) -> tuple[set[str], ...]:
    """Wait until each worker holds partitions and together they hold ``every`` (each
    partition once, if ``disjoint``); return their assignments."""
    deadline = time.monotonic() + timeout
    while True:
        held = tuple(w.assignment() for w in workers)
        if (all(held) and set().union(*held) == every
                and (not disjoint or sum(map(len, held)) == len(every))):
            return held
        assert time.monotonic() < deadline, (
            f"no {'stable ' if disjoint else ''}split after {timeout}s: {held}\n{logs(workers)}"
        )
        await asyncio.sleep(0.02)
