"""What the release before the engine's restructure wrote still works after it.

``fixtures/release-fdf5941.json`` was captured by running release fdf5941 (stop 6): the
orders example's changelogs and records a client of that release sent but no worker had
processed yet, and the sensors example's open windows. Restored and processed by this
release, they give what the old release would have given. Keep a fixture like it for every
later change of the wire format or the state encoding (README: Upgrading).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from packetflow import Security, TestDriver
from topologies import orders, sensors

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "release-fdf5941.json").read_text())


def _b(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _record(r: dict[str, Any]) -> tuple[str, int | None, bytes | None, bytes | None, Any]:
    headers = [(name, _b(value)) for name, value in r["headers"]]
    return r["topic"], r.get("partition"), _b(r["key"]), _b(r["value"]), headers


def _trusting(topology: Any, key: dict[str, str]) -> Any:
    return Security(trusted_keys={key["kid"]: key["public_pem"]})


def test_the_old_changelogs_restore_and_old_records_and_tokens_still_process() -> None:
    changelogs = [_record(r) for r in FIXTURE["records"] if r["topic"].endswith(".changelog")]
    topology = orders.topology
    saved = topology.security
    topology.security = _trusting(topology, FIXTURE["key"])
    try:
        with TestDriver(topology, start_time=1_700_000_200, preload=changelogs) as driver:
            restored = {k: v.model_dump() for k, v in driver.states("accounts").items()}
            assert restored == FIXTURE["states"]  # the old changelog, read by this release
            for topic, _, key, value, headers in map(_record, FIXTURE["later"]):
                driver.send_raw(topic, value, key=key, headers=headers)  # old client, old token
            assert driver.denied() == [] and driver.dead_letters() == []
            assert driver.state("accounts", "acct-1").balance == 70 + 5
            assert driver.state("accounts", "acct-2").balance == 70 - 10
            reported = [i for i in driver.emitted("ledger")
                        if isinstance(i, orders.BalanceReported)]
            assert [(r.balance, r.principal) for r in reported] == [(75, "teller-1")]
    finally:
        topology.security = saved


def test_the_old_open_windows_restore_and_close_with_what_they_held() -> None:
    old = FIXTURE["sensors"]
    topology = sensors.topology
    saved = topology.security
    topology.security = _trusting(topology, old["key"])
    try:
        with TestDriver(topology, start_time=old["start"] + 4,
                        preload=[_record(r) for r in old["records"]]) as driver:
            driver.advance_time(20)  # past the first 10 s window and its 2 s grace
            averages = driver.emitted("averages")
    finally:
        topology.security = saved
    (average,) = averages
    assert average == sensors.AverageTemperature(  # the four readings taken by the old release
        device="d1", start=average.start, end=average.end, celsius=21.75, readings=4
    )
    assert average.start.timestamp() == old["start"]
