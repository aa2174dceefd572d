"""The billing example (topologies/billing.py) over a year of virtual time: monthly
invoices in the customer's zone, reminders that escalate unless paid, unsubscribing."""

from __future__ import annotations

from datetime import timedelta

from packetflow import TestDriver
from packetflow.core.tokens import OUTSIDE_WINDOW
from packetflow.temporal.timing import local
from topologies.billing import (
    Account,
    Credit,
    Issued,
    Paid,
    Reminded,
    Subscribe,
    Unsubscribe,
    topology,
)

OFFICE = "credit:invoice/*@mon-fri 09:00-17:00 America/New_York"


def test_a_year_of_billing() -> None:
    with TestDriver(topology, start_time=local("2026-01-15 12:00", "America/New_York")) as d:
        service = d.issue("billing-svc", ["billing:**"], ttl="400d")
        d.send(Subscribe(customer="acme", tz="America/New_York", monthly=4900), token=service)
        d.advance(timedelta(days=20))  # Feb 1st, 09:00 New York: the first invoice
        (first,) = d.emitted("issued")
        assert first == Issued(customer="acme", invoice=1, amount=4900, at=first.at)
        assert d.state("accounts", "acme") == Account(invoices=1, unpaid=[1])
        d.send(Paid(customer="acme", invoice=1), token=service)  # paid: no reminders
        support = d.issue("support-1", [OFFICE], ttl="30d")
        d.send(Credit(customer="acme", amount=900), token=support)  # Wed Feb 4th, 12:00
        d.advance(timedelta(days=3))  # Saturday: outside office hours
        d.send(Credit(customer="acme", amount=5000), token=support)
        assert [x.header("pf-reason") for x in d.denied()] == [OUTSIDE_WINDOW]
        d.advance(timedelta(days=25))  # Mar 1st: the second, never paid, less the credit
        d.advance(timedelta(days=15))  # its reminder, then its escalation
        assert d.emitted("reminders") == [
            Reminded(customer="acme", invoice=2, escalated=False),
            Reminded(customer="acme", invoice=2, escalated=True),
        ]
        d.send(Unsubscribe(customer="acme"), token=service)
        d.advance(timedelta(days=300))
        assert len(d.emitted("issued")) == 2  # Feb and Mar: unsubscribed on Mar 19th
        assert [i.amount for i in d.emitted("issued")] == [4900, 4000]
        assert len(d.denied()) == 1 and not d.dead_letters()
