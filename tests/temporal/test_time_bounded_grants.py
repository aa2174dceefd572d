"""Time-bounded capabilities: a grant held only while a calendar is open, on the worker's
clock (virtual in TestDriver), refused outside with ``outside-window``, delegated only
narrower; and calendars as tokens carry them."""

from __future__ import annotations

from datetime import datetime

import pytest

from packetflow import Capability, Context, Intent, TestDriver, Topology
from packetflow.core.calendar import Calendar
from packetflow.core.tokens import OUTSIDE_WINDOW
from packetflow.temporal.timing import local

BERLIN = "Europe/Berlin"
OFFICE = "withdraw:account/*@mon-fri 09:00-17:00 Europe/Berlin"


class Withdraw(Intent, type_name="win.Withdraw", key="account",
               requires=["withdraw:account/{account}"]):  # fmt: skip
    account: str
    amount: int


def _bank() -> tuple[Topology, list[Withdraw]]:
    topo = Topology("windows")
    taken: list[Withdraw] = []

    @topo.reactor(Withdraw, topic="withdrawals")
    def withdraw(intent: Withdraw, ctx: Context) -> None:
        taken.append(intent)

    return topo, taken


def _at(when: str) -> datetime:
    return local(when, BERLIN)


def test_a_grant_holds_only_while_its_window_is_open() -> None:
    topo, taken = _bank()
    with TestDriver(topo, start_time=_at("2026-12-04 10:00")) as driver:  # a Friday
        teller = driver.issue("teller", [OFFICE], ttl="7d")
        driver.send(Withdraw(account="a1", amount=5), token=teller)
        assert len(taken) == 1
        driver.advance(8 * 3600)  # 18:00: closed
        driver.send(Withdraw(account="a1", amount=6), token=teller)
        driver.advance(2 * 86400)  # Sunday
        driver.send(Withdraw(account="a1", amount=7), token=teller)
        driver.advance(86400 - 8 * 3600)  # Monday 10:00: open again
        driver.send(Withdraw(account="a1", amount=8), token=teller)
        assert [w.amount for w in taken] == [5, 8]
        denied = driver.denied()
        assert [d.header("pf-reason") for d in denied] == [OUTSIDE_WINDOW] * 2
        assert "mon-fri 09:00-17:00 Europe/Berlin" in (denied[0].header("pf-error") or "")


def test_an_unbounded_grant_beside_a_bounded_one_still_holds() -> None:
    topo, taken = _bank()
    with TestDriver(topo, start_time=_at("2026-12-05 10:00")) as driver:  # Saturday
        both = driver.issue("manager", [OFFICE, "withdraw:account/vip"], ttl="1d")
        driver.send(Withdraw(account="vip", amount=1), token=both)
        driver.send(Withdraw(account="a1", amount=2), token=both)
        assert [w.account for w in taken] == ["vip"]
        assert [d.header("pf-reason") for d in driver.denied()] == [OUTSIDE_WINDOW]


@pytest.mark.parametrize(
    ("child", "widened"),
    [
        ("withdraw:account/*@mon-wed 10:00-12:00 Europe/Berlin", False),  # narrower
        ("withdraw:account/*@sat 10:00-12:00 Europe/Berlin", True),  # a day it never had
        ("withdraw:account/*@mon-fri 08:00-17:00 Europe/Berlin", True),  # an hour earlier
        ("withdraw:account/*@mon-fri 09:00-17:00 Europe/London", True),  # another zone
        ("withdraw:account/*", True),  # no window at all
    ],
)
def test_a_delegated_window_may_only_narrow(child: str, widened: bool) -> None:
    topo, _ = _bank()
    with TestDriver(topo, start_time=_at("2026-12-04 10:00")) as driver:
        parent = driver.issue("teller", [OFFICE], ttl="7d")
        if widened:
            with pytest.raises(ValueError, match=r"which its parent .* does not grant"):
                driver.delegate(parent, "intern", [child], ttl="1d")
        else:
            driver.delegate(parent, "intern", [child], ttl="1d")


def test_windows_are_written_once_and_read_back() -> None:
    grant = Capability.parse("withdraw:account/*@ mon-fri 09:00-12:00,13:00-17:00 ; sat "
                             "10:00-12:00 Europe/Berlin except 2026-12-25")  # fmt: skip
    assert str(grant) == (
        "withdraw:account/*@mon-fri 09:00-12:00,13:00-17:00; sat 10:00-12:00 Europe/Berlin "
        "except 2026-12-25"
    )
    assert Capability.parse(str(grant)) == grant
    calendar = grant.calendar
    assert isinstance(calendar, Calendar)
    assert calendar.contains(int(_at("2026-12-05 11:00").timestamp() * 1000))
    assert not calendar.contains(int(_at("2026-12-25 11:00").timestamp() * 1000))
    for bad, message in [
        ("read:x@mon 9-5 UTC", "HH:MM-HH:MM"),
        ("read:x@mon-fri 09:00-17:00", "the zone last"),
        ("read:x@mon 09:00-10:00 Mars/Base", "unknown time zone"),
    ]:
        with pytest.raises(ValueError, match=message):
            Capability.parse(bad)


def test_a_schedule_made_with_a_bounded_grant_fires_only_inside_its_window() -> None:
    from packetflow.temporal import every, scheduler

    topo, taken = _bank()
    schedules = scheduler(topo)
    with TestDriver(topo, start_time=_at("2026-12-04 15:20")) as driver:  # Friday
        teller = driver.issue("teller", [OFFICE, "schedule:account/*"], ttl="7d")
        driver.send(schedules.create(Withdraw(account="a1", amount=1), every(3600), id="w"),
                    token=teller)  # fmt: skip
        driver.advance(5 * 3600)  # due at 16:00, then 17:00 ... 20:00: closed from 17:00
        assert len(taken) == 1
        assert {d.header("pf-reason") for d in driver.denied()} == {OUTSIDE_WINDOW}
