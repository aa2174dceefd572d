"""The topology the recovery tests run as ``packetflow worker tests/support/crashproc.py``.

A ``Job`` with ``poison`` set kills the worker process that handles it (SIGKILL, as the
kernel's out-of-memory killer would); one with ``hang`` set never returns (the watchdog ends
the process). Every job carries a ``seq``, so the tests can see which were done.
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from packetflow import Context, Intent, Topology

if TYPE_CHECKING:
    from packetflow import Client

topology = Topology("crashproc", allow_unsigned=True)  # the test inputs carry plain caps


class Job(Intent, type_name="crashproc.Job", key="key", requires=["run:job/{key}"]):
    key: str
    seq: int
    poison: bool = False
    hang: bool = False


class Done(Intent, type_name="crashproc.Done", key="key"):
    key: str
    seq: int


topology.route(Done, "done")


@topology.reactor(Job, topic="jobs", state=int)
def work(job: Job, ctx: Context, count: int) -> tuple[int, Done]:
    if job.poison:
        os.kill(os.getpid(), signal.SIGKILL)
    if job.hang:
        time.sleep(3600)
    return count + 1, Done(key=job.key, seq=job.seq)


# -- for the tests that feed it ----------------------------------------------------------


def jobs(
    *seqs: int, poison: int | None = None, hang: int | None = None
) -> list[tuple[Job, Context]]:
    """Jobs with these ``seq`` numbers (spread over keys), with the capability they need."""
    return [
        (Job(key=f"k{s % 8}" if poison is None and hang is None else "k", seq=s,
             poison=s == poison, hang=s == hang),
         Context.new(capabilities=["run:job/*"]))
        for s in seqs
    ]


async def done(client: Client) -> set[int]:
    """The ``seq`` of every job done so far."""
    return {r.intent.seq for r in await client.read("done") if isinstance(r.intent, Done)}
