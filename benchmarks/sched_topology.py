"""The topology ``python -m benchmarks.schedules`` runs as ``packetflow worker
benchmarks/sched_topology.py``: a scheduler whose schedules publish ``Tick`` to ``ticks``
(unsigned capabilities: the signed path is measured in the main benchmark)."""

from __future__ import annotations

from packetflow import Intent, Topology
from packetflow.temporal import scheduler

topology = Topology("schedbench", allow_unsigned=True, partitions=4)
schedules = scheduler(topology)


class Tick(Intent, type_name="schedbench.Tick", key="id", requires=["tick:tick/{id}"]):
    id: str


topology.route(Tick, "ticks")
