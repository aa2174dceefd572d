"""An outage is said once when it begins and once when it has really ended, with how long."""

from __future__ import annotations

import logging

import pytest

from packetflow.engine.runtime.outage import Outage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "packetflow.worker"]


def test_a_flapping_broker_is_one_outage_ended_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "packetflow.worker")
    clock = Clock()
    outage = Outage("broker b", clock, settle=3.0)
    outage.failing("connection refused")
    clock.now += 5
    outage.failing("connection refused again")  # still the same outage: not said again
    outage.ok()  # it answers...
    clock.now += 1
    outage.failing("coordinator not ready")  # ...but not yet for good
    clock.now += 1
    outage.ok()
    clock.now += 2
    outage.ok()  # answering for 2 s: not yet
    assert outage.active
    clock.now += 1.5
    outage.ok()  # for 3.5 s: over
    assert not outage.active
    assert said(caplog) == [
        "broker b unreachable: connection refused; retrying",
        "broker b reachable again: resumed after 7.0s (connection refused)",
    ]


def test_a_batch_through_ends_an_outage_at_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "packetflow.worker")
    clock = Clock()
    outage = Outage("broker b", clock)
    outage.ok(processed=True)  # no outage: nothing to say
    outage.failing("timed out")
    clock.now += 2.5
    outage.ok(processed=True)
    assert not outage.active and outage.count == 1
    assert said(caplog)[-1] == "broker b reachable again: resumed after 2.5s (timed out)"
