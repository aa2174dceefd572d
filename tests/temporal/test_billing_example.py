"""The billing example (topologies/billing.py) over a year of virtual time: monthly
invoices in the customer's zone, reminders that escalate unless paid, unsubscribing."""

from __future__ import annotations

from datetime import timedelta

from packetflow import TestDriver
from packetflow.temporal.timing import local
from topologies.billing import Account, Issued, Paid, Reminded, Subscribe, Unsubscribe, topology


def test_a_year_of_billing() -> None:
    with TestDriver(topology, start_time=local("2026-01-15 12:00", "America/New_York")) as d:
        service = d.issue("billing-svc", ["billing:**"], ttl="400d")
        d.send(Subscribe(customer="acme", tz="America/New_York", monthly=4900), token=service)
        d.advance(timedelta(days=20))  # Feb 1st, 09:00 New York: the first invoice
        (first,) = d.emitted("issued")
        assert first == Issued(customer="acme", invoice=1, amount=4900, at=first.at)
        assert d.state("accounts", "acme") == Account(invoices=1, unpaid=[1])
        d.send(Paid(customer="acme", invoice=1), token=service)  # paid: no reminders
        d.advance(timedelta(days=28))  # Mar 1st: the second, never paid
        d.advance(timedelta(days=15))  # its reminder, then its escalation
        assert d.emitted("reminders") == [
            Reminded(customer="acme", invoice=2, escalated=False),
            Reminded(customer="acme", invoice=2, escalated=True),
        ]
        d.send(Unsubscribe(customer="acme"), token=service)
        d.advance(timedelta(days=300))
        assert len(d.emitted("issued")) == 2  # Feb and Mar: unsubscribed on Mar 19th
        assert not d.denied() and not d.dead_letters()
