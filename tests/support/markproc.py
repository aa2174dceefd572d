"""The topology the exactly-once recovery tests run (``tests/support/markproc.py``).

A ``Mark`` is answered by a ``Marked`` sent and acknowledged at once, inside the batch's
transaction, after which the reactor waits ``$PF_TEST_STALL`` seconds: a transaction with
records on the broker, open for as long as a test needs to kill or stop the worker.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from packetflow import Context, Intent, Topology, call, emit, sequential

topology = Topology("markproc", processing_guarantee="exactly_once")


class Mark(Intent, type_name="markproc.Mark", key="name"):
    name: str


class Marked(Intent, type_name="markproc.Marked", key="name"):
    name: str
    pid: int


topology.route(Marked, "marked")


@topology.reactor(Mark, topic="marks", public=True)
async def mark(intent: Mark, ctx: Context) -> Any:
    stall = float(os.environ.get("PF_TEST_STALL", "0"))
    return sequential(
        emit(Marked(name=intent.name, pid=os.getpid())),  # acknowledged before the stall
        call(asyncio.sleep, stall),
    )
