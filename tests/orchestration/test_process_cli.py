"""``packetflow process list|show`` on what a run left on Kafka: instances from the
changelog, one instance's history from the transitions topic; user errors exit 2 with one
line and no traceback."""

from __future__ import annotations

import json

import pytest
from support import sagas
from support.running import WAIT, running
from support.workerproc import assert_user_error, cli, new_namespace, topology_in

from packetflow import Context

pytestmark = pytest.mark.kafka

MODULE = "tests/support/sagas.py"
ANN = Context(principal="ann", capabilities=sagas.GRANTS)


async def test_process_list_and_show_read_what_a_run_left(kafka_url: str) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, sagas.topology)
    async with running(topology, kafka_url) as run:
        await run.send(sagas.Book(trip="c1"), ANN)
        await run.send(sagas.Book(trip="c2", modes={"hotel": "raise"}), ANN)
        await run.client.wait_for(sagas.OUTCOMES, 2, timeout=WAIT)
        await run.idle()

    listed = cli("process", "list", MODULE, "--broker", kafka_url, "--format", "json",
                 namespace=namespace)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert {k: (r["saga"], r["status"]) for k, r in rows.items()} == {
        "c1": ("trip", "completed"), "c2": ("trip", "compensated"),
    }  # fmt: skip
    assert rows["c2"]["failure"]["step"] == "hotel"
    table = cli("process", "list", MODULE, "--broker", kafka_url, namespace=namespace)
    assert "compensated" in table.stdout and "2 instances" in table.stderr

    shown = cli("process", "show", MODULE, "c2", "--broker", kafka_url, namespace=namespace)
    assert shown.returncode == 0, shown.stderr
    c2 = json.loads(shown.stdout)
    assert c2["status"] == "compensated" and c2["by"] == "ann"
    assert c2["compensated"] == ["flight"] and c2["current"] == [] and c2["timers"] == {}
    events = [(e["event"], e["step"]) for e in c2["history"]]
    assert events[0] == ("started", None) and events[-1] == ("compensated", "hotel")
    assert ("compensation-completed", "flight") in events
    assert all(e["at"].endswith("+00:00") for e in c2["history"])

    for args, pattern in [
        (("show", MODULE, "nope", "--broker", kafka_url), "no saga instance 'nope'"),
        (("list", MODULE, "--saga", "other", "--broker", kafka_url), "no saga 'other'"),
        (("list", "topologies.orders", "--broker", kafka_url), "has no saga"),
        (("list", MODULE, "--broker", "memory://"), "memory://"),
    ]:
        assert_user_error(cli("process", *args, namespace=namespace), pattern)
