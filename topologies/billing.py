"""Billing on schedules: monthly invoices on cron in each customer's time zone, and payment
reminders that escalate unless the invoice is paid.

Run it:  packetflow worker topologies.billing          (broker: $PACKETFLOW_BROKER or memory://)
Inspect: packetflow schedule list topologies.billing --broker kafka://...

The billing service (a token with the ``billing`` role) subscribes a customer: that creates
the schedule ``invoice-<customer>``, which publishes an ``Invoice`` at 09:00 on the first of
every month in the customer's zone, with the billing service's authority. Each invoice
schedules a ``Remind`` a week later and an ``Escalate`` two weeks later (ids derived from the
invoice); ``Paid`` cancels both. An unsubscribe cancels the monthly schedule. Firing ids
derive from (schedule id, instant): a consumer that sees one twice drops it. Support staff
credit customers with a token bounded to office hours, e.g.
``packetflow caps issue support-1 "credit:invoice/*@mon-fri 09:00-17:00 America/New_York"``:
a ``Credit`` sent outside them is denied with ``outside-window``.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from packetflow import Context, Intent, Topology, emit
from packetflow.temporal import after, cron, resource_of, scheduler

topology = Topology(
    "billing", capabilities={"billing": ["subscribe", "bill", "remind", "schedule", "pay"]}
)
schedules = scheduler(topology)


class Subscribe(Intent, type_name="billing.Subscribe", key="customer",
                requires=["subscribe:customer/{customer}"]):  # fmt: skip
    customer: str
    tz: str = "UTC"
    monthly: int  # cents


class Unsubscribe(Intent, type_name="billing.Unsubscribe", key="customer",
                  requires=["subscribe:customer/{customer}"]):  # fmt: skip
    customer: str


class Invoice(Intent, type_name="billing.Invoice", key="customer",
              requires=["bill:invoice/{customer}"]):  # fmt: skip
    """Published by the customer's monthly schedule."""

    customer: str
    amount: int


class Paid(Intent, type_name="billing.Paid", key="customer",
           requires=["pay:invoice/{customer}"]):  # fmt: skip
    customer: str
    invoice: int  # the invoice's number


class Credit(Intent, type_name="billing.Credit", key="customer",
             requires=["credit:invoice/{customer}"]):  # fmt: skip
    """A goodwill credit off the next invoice (support staff, in office hours)."""

    customer: str
    amount: int


class Remind(Intent, type_name="billing.Remind", key="customer",
             requires=["remind:invoice/{customer}"]):  # fmt: skip
    customer: str
    invoice: int
    escalate: bool = False


class Issued(Intent, type_name="billing.Issued", key="customer", internal=True):
    customer: str
    invoice: int
    amount: int
    at: str  # the schedule's instant, ms


class Reminded(Intent, type_name="billing.Reminded", key="customer", internal=True):
    customer: str
    invoice: int
    escalated: bool


class Account(BaseModel):
    invoices: int = 0  # issued so far
    unpaid: list[int] = []
    credit: int = 0  # off the next invoice


topology.route(Issued, "issued")
topology.route(Reminded, "reminders")


def _reminders(customer: str, invoice: int) -> tuple[str, str]:
    return f"remind-{customer}-{invoice}", f"escalate-{customer}-{invoice}"


@topology.reactor(Subscribe | Unsubscribe, topic="subscriptions")
def subscriptions(message: Subscribe | Unsubscribe, ctx: Context):  # type: ignore[no-untyped-def]
    """Creates or cancels the customer's monthly invoice schedule."""
    schedule_id = f"invoice-{message.customer}"
    if isinstance(message, Unsubscribe):
        invoice = Invoice(customer=message.customer, amount=0)
        return schedules.cancel(schedule_id, resource_of(invoice))
    invoice = Invoice(customer=message.customer, amount=message.monthly)
    return schedules.schedule(invoice, cron("0 9 1 * *", tz=message.tz), id=schedule_id)


@topology.reactor(Invoice | Paid | Remind | Credit, topic="invoices", state=Account,
                  emits=[Issued, Reminded])  # fmt: skip
def accounts(message: Invoice | Paid | Remind | Credit, ctx: Context, account: Account):  # type: ignore[no-untyped-def]
    """Issues invoices (less credits), schedules their reminders, stops them once paid."""
    match message:
        case Credit(amount=amount):
            return account.model_copy(update={"credit": account.credit + amount}), None
        case Invoice(customer=customer, amount=amount):
            number = account.invoices + 1
            remind, escalate = _reminders(customer, number)
            amount, left = max(amount - account.credit, 0), max(account.credit - amount, 0)
            return Account(invoices=number, unpaid=[*account.unpaid, number], credit=left), [
                emit(Issued(customer=customer, invoice=number, amount=amount,
                            at=ctx.baggage.get("scheduled", ""))),
                schedules.schedule(Remind(customer=customer, invoice=number),
                                   after(timedelta(days=7)), id=remind),
                schedules.schedule(Remind(customer=customer, invoice=number, escalate=True),
                                   after(timedelta(days=14)), id=escalate),
            ]  # fmt: skip
        case Paid(customer=customer, invoice=number) if number in account.unpaid:
            resource = resource_of(Remind(customer=customer, invoice=number))
            unpaid = [n for n in account.unpaid if n != number]
            return account.model_copy(update={"unpaid": unpaid}), [
                schedules.cancel(schedule_id, resource)
                for schedule_id in _reminders(customer, number)
            ]
        case Remind(customer=customer, invoice=number, escalate=escalate) if (
            number in account.unpaid
        ):
            return account, emit(Reminded(customer=customer, invoice=number, escalated=escalate))
    return account, None  # paid twice, or a reminder for a paid invoice
