"""Plumbing the other modules share: progress messages, a lock file, running a command,
and one-line summaries of a command's output or a log's end (what error messages quote)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from packetflow.localkafka.layout import LocalKafkaError

Progress = Callable[[str], None]


def say(progress: Progress | None, message: str) -> None:
    """Pass *message* to *progress*, if there is one."""
    if progress is not None:
        progress(message)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on *path* (serialises concurrent fetch/start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_command(cmd: list[str], cwd: Path, timeout: float, timeout_message: str) -> tuple[int, str]:
    """Run ``cmd`` in ``cwd`` without stdin; its exit status and stdout + stderr.

    Raises :class:`LocalKafkaError` with ``timeout_message`` when it outlives ``timeout``.
    """
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LocalKafkaError(timeout_message) from exc
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def tail(path: Path, lines: int = 8) -> str:
    """Last non-empty *lines* of a text file joined with `` | `` (empty if unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return tail_text(text, lines)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MVN_NOISE = re.compile(
    r"-e switch|-X switch|For more information about the errors|^\[ERROR\] \[Help \d+\]|"
    r"cwiki\.apache\.org|^\[ERROR\]\s*$|^\[ERROR\] After correcting the problems|"
    r"^\[ERROR\] mvn <args> -rf"
)
_STACK = re.compile(r"^\s+(at |\.\.\. \d+ more)")
_ERRORISH = re.compile(r"\b(ERROR|FATAL)\b|Exception|Error:")


def tail_text(text: str, lines: int = 8) -> str:
    """Summarise the end of a log as one line joined with `` | ``.

    Drops Java stack frames and Maven boilerplate; if any lines mention an error or
    exception, only the last of those are kept.
    """
    kept = [
        re.sub(r"\s*-> \[Help \d+\]$", "", ln.strip())[:400]
        for ln in ANSI.sub("", text).splitlines()
        if ln.strip() and not _MVN_NOISE.search(ln.strip()) and not _STACK.match(ln)
    ]
    errors = [ln for ln in kept if _ERRORISH.search(ln)]
    return " | ".join((errors or kept)[-lines:])
