"""The topology the schedule process tests run as ``packetflow worker
tests/support/schedproc.py``: a scheduler whose schedules publish ``Tick`` to ``ticks``
(exactly-once unless ``$PF_TEST_GUARANTEE`` says otherwise)."""

from __future__ import annotations

import os

from packetflow import Intent, Topology
from packetflow.temporal import scheduler

topology = Topology(
    "schedproc",
    allow_unsigned=True,  # the test inputs carry plain capabilities
    processing_guarantee=os.environ.get("PF_TEST_GUARANTEE", "exactly_once"),
    partitions=4,
)
schedules = scheduler(topology)


class Tick(Intent, type_name="schedproc.Tick", key="id", requires=["tick:tick/{id}"]):
    id: str


topology.route(Tick, "ticks")
