"""Broker outages, said once: when the broker stops answering and when it answers again.

aiokafka logs every failed connection attempt (about 140 ERROR lines a second with the
broker down), and none of them says what a worker is doing about it. :class:`Outage`
reports an outage once, with its cause, and once when the worker is served again, with how
long it lasted; :func:`quiet_aiokafka` lets each distinct aiokafka message through at most
once per interval (with a count of what it held back) and tells the workers of this process
when one of them looks like a lost connection.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable

log = logging.getLogger("packetflow.worker")

_CONNECTION_TROUBLE = re.compile(
    r"connect|metadata|NodeNotReady|coordinator|dead|timed? ?out|unreachable|refused",
    re.IGNORECASE,
)


class Outage:
    """Whether the broker is failing this worker, since when, and the one-line log of it.

    A broker coming back flaps for a while (it answers, its group coordinator is not ready
    yet, a connection drops again): the end of an outage is said once the worker processed
    a batch again, or the broker has answered for ``settle`` seconds with no new failure.
    """

    def __init__(
        self, what: str, clock: Callable[[], float] = time.monotonic, settle: float = 3.0
    ) -> None:
        self.what = what
        self._clock = clock
        self.settle = settle
        self.since: float | None = None
        self._answering_since: float | None = None  # during an outage: served again since
        self.cause = ""
        self.count = 0  # outages seen

    @property
    def active(self) -> bool:
        return self.since is not None

    def failing(self, cause: str) -> None:
        """The broker failed an operation; logged only when an outage begins."""
        if self.since is not None:
            self._answering_since = None  # not back yet after all
            return
        self.since = self._clock()
        self.cause = cause
        self.count += 1
        log.warning("%s unreachable: %s; retrying", self.what, cause)

    def ok(self, *, processed: bool = False) -> None:
        """The broker served an operation (``processed``: the worker got a batch through);
        logs the end of an outage once it has really ended."""
        if self.since is None:
            return
        now = self._clock()
        if self._answering_since is None:
            self._answering_since = now
        if not processed and now - self._answering_since < self.settle:
            return
        took = self._answering_since - self.since
        self.since = self._answering_since = None
        log.warning("%s reachable again: resumed after %.1fs (%s)", self.what, took, self.cause)


class _RateLimit(logging.Filter):
    """At most one record per distinct message per ``every`` seconds; the next says how many
    were held back. Connection-looking warnings are passed to the process's outages."""

    def __init__(self, every: float) -> None:
        super().__init__("packetflow-rate-limit")
        self.every = every
        self._lock = threading.Lock()
        self._last: dict[tuple[str, int, object], tuple[float, int]] = {}
        self.outages: weakref.WeakSet[Outage] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            message = record.getMessage()
            if _CONNECTION_TROUBLE.search(message):
                for outage in list(self.outages):
                    outage.failing(message.splitlines()[0][:300])
        key = (record.name, record.levelno, record.msg)
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (float("-inf"), 0))
            if now - last < self.every:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
            if len(self._last) > 10_000:
                self._last.clear()
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.every:g}s)"
        return True


_FILTER = _RateLimit(every=30.0)


def quiet_aiokafka(outage: Outage | None = None) -> None:
    """Rate-limit aiokafka's logging (process-wide) and route its connection trouble to
    ``outage``. A logger's filters do not apply to its children's records, so the filter goes
    on every aiokafka logger that exists (they are made when aiokafka is imported)."""
    import aiokafka  # noqa: F401 - its modules create their loggers on import

    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        ours = name == "aiokafka" or name.startswith("aiokafka.")
        if ours and isinstance(logger, logging.Logger) and _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    if outage is not None:
        _FILTER.outages.add(outage)
