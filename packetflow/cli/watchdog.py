"""A watchdog for the worker process: a stuck event loop ends the process.

A reactor that never returns (a sync call that blocks forever, an infinite loop) cannot be
interrupted from inside the event loop, and a worker stuck that way holds its partitions
while doing nothing. The watchdog is a thread that expects the loop to tick every second;
when it has not for ``limit`` seconds it logs what the main thread is doing and exits the
process (status 70), so a supervisor restarts it and the crash-loop breaker
(``packetflow.engine.runtime.breaker``) counts the death against the record in hand.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time

log = logging.getLogger("packetflow.worker")
EXIT_STUCK = 70  # EX_SOFTWARE


def watch_the_loop(limit: float) -> None:
    """Start watching the running event loop; exits the process if it stalls ``limit`` s."""
    beat = [time.monotonic()]

    async def tick() -> None:
        while True:
            beat[0] = time.monotonic()
            await asyncio.sleep(1.0)

    task = asyncio.get_running_loop().create_task(tick(), name="packetflow-watchdog")

    def watch() -> None:
        while not task.done():
            time.sleep(1.0)
            stalled = time.monotonic() - beat[0]
            if stalled > limit:
                log.critical(
                    "the worker's event loop has been stuck for %.0fs (a reactor that does not "
                    "return?); exiting so that it is restarted. Where it is stuck:",
                    stalled,
                )
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                os._exit(EXIT_STUCK)

    threading.Thread(target=watch, name="packetflow-watchdog", daemon=True).start()
