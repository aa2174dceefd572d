"""The offline proposer on phrasings of the example topologies' intents: each row the intent
it must propose, or the required field it must say it could not fill (never invented), or
no intent at all; the proposal's validation, JSON and the provider registry."""

from __future__ import annotations

import enum
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.webshop import shop as webshop

from packetflow import Intent, Topology
from packetflow.mcp.proposals import (
    ModelProvider,
    OfflineProvider,
    Proposal,
    ProposalError,
    Provider,
    proposable_types,
    provider_from,
)
from topologies import billing, orders, sensors, shop

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES: dict[str, Topology] = {
    "orders": orders.topology,
    "shop": shop.topology,
    "billing": billing.topology,
    "sensors": sensors.topology,
    "web": webshop(),
}


@dataclass(frozen=True)
class Row:
    topology: str
    text: str
    intent_type: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


def row(topology: str, text: str, intent_type: str | None, **fields: Any) -> Row:
    return Row(topology, text, intent_type, fields)


def unfilled(topology: str, text: str, intent_type: str, missing: str, **fields: Any) -> Row:
    return Row(topology, text, intent_type, fields, tuple(missing.split()))


ROWS = [
    # orders: the verbs, their synonyms, prepositions that say which account is which
    row("orders", "deposit 30 into acct-7", "orders.Deposit", account="acct-7", amount=30),
    row("orders", "please put $250 in account acct-0001", "orders.Deposit",
        account="acct-0001", amount=250),
    row("orders", "withdraw 5 from acct-7", "orders.Withdraw", account="acct-7", amount=5),
    row("orders", "take 20 out of acct-3", "orders.Withdraw", account="acct-3", amount=20),
    row("orders", "I'd like to withdraw 1,000 dollars from acct-12", "orders.Withdraw",
        account="acct-12", amount=1000),
    row("orders", "transfer 50 from acct-1 to acct-2 as t-9", "orders.Transfer",
        transfer_id="t-9", source="acct-1", target="acct-2", amount=50),
    row("orders", "send 75 to acct-2 from acct-1, reference t42", "orders.Transfer",
        transfer_id="t42", source="acct-1", target="acct-2", amount=75),
    row("orders", "move 10 into acct-9 from acct-8 transfer id tx-1", "orders.Transfer",
        transfer_id="tx-1", source="acct-8", target="acct-9", amount=10),
    row("orders", "what's the balance of acct-7?", "orders.AuditBalance", account="acct-7"),
    row("orders", "orders.Withdraw account=acct-1 amount=5", "orders.Withdraw",
        account="acct-1", amount=5),
    row("orders", "orders.Transfer transfer_id=t1 source=acct-1 target=acct-2 amount=9",
        "orders.Transfer", transfer_id="t1", source="acct-1", target="acct-2", amount=9),
    row("orders", "Deposit amount=30 account=\u201cacct 7\u201d", "orders.Deposit",
        account="acct 7", amount=30),
    row("orders", "ACCT-7: deposit 30", "orders.Deposit", account="ACCT-7", amount=30),
    unfilled("orders", "transfer 50 from acct-1 to acct-2", "orders.Transfer", "transfer_id",
             source="acct-1", target="acct-2", amount=50),
    unfilled("orders", "could you move 40 bucks over to acct-2 from acct-1?", "orders.Transfer",
             "transfer_id", source="acct-1", target="acct-2", amount=40),
    unfilled("orders", "transfer 50 from acct-1", "orders.Transfer", "transfer_id target",
             source="acct-1", amount=50),
    unfilled("orders", "deposit into acct-7", "orders.Deposit", "amount", account="acct-7"),
    unfilled("orders", "deposit thirty into acct-7", "orders.Deposit", "amount",
             account="acct-7"),
    unfilled("orders", "deposit 30", "orders.Deposit", "account", amount=30),
    row("orders", "what's the weather like in Paris", None),
    row("orders", "acct-7 30", None),
    row("orders", "deposit or withdraw 30 acct-7", None),  # two types, equally: neither
    # shop (actors): a plain word is the thing added, an identifier the cart
    row("shop", "add tea to cart c1", "shop.AddItem", cart="c1", sku="tea"),
    row("shop", "put a cake in cart c2", "shop.AddItem", cart="c2", sku="cake"),
    row("shop", "check out c9", "shop.Checkout", cart="c9"),
    unfilled("shop", "add jam", "shop.AddItem", "cart", sku="jam"),
    # billing (schedules): numbers named by the word before them, a Literal by its value
    row("billing", "subscribe c1 at 2500 a month in Europe/Paris", "billing.Subscribe",
        customer="c1", tz="Europe/Paris", monthly=2500),
    row("billing", "subscribe customer c1 monthly 1999", "billing.Subscribe",
        customer="c1", monthly=1999),
    row("billing", "unsubscribe c1", "billing.Unsubscribe", customer="c1"),
    row("billing", "customer c1 paid invoice #4", "billing.Paid", customer="c1", invoice=4),
    row("billing", "remind c1 about invoice 3 and escalate", "billing.Remind",
        customer="c1", invoice=3, escalate=True),
    row("billing", "remind c1 about invoice 3, don't escalate", "billing.Remind",
        customer="c1", invoice=3, escalate=False),
    row("billing", "bill c1 40", "billing.Invoice", customer="c1", amount=40),
    unfilled("billing", "pause schedule invoice-c1", "packetflow.temporal.ScheduleCommand",
             "resource", schedule_id="invoice-c1", op="pause"),
    # sensors (windows): floats, units, dates and times against a fixed now
    row("sensors", "dev-1 at plant-a reads 21.5°C at 10:30 today", "sensors.Reading",
        device="dev-1", site="plant-a", celsius=21.5,
        taken_at=datetime(2026, 1, 5, 10, 30, tzinfo=UTC)),
    row("sensors", "reading 19 degrees from dev-3 at warehouse taken 5 minutes ago",
        "sensors.Reading", device="dev-3", site="warehouse", celsius=19.0,
        taken_at=datetime(2026, 1, 5, 11, 55, tzinfo=UTC)),
    row("sensors", "reading: dev-9 plant-c 20.5C taken yesterday at 9am", "sensors.Reading",
        device="dev-9", site="plant-c", celsius=20.5,
        taken_at=datetime(2026, 1, 4, 9, 0, tzinfo=UTC)),
    row("sensors", "set the threshold of dev-2 to 35 degrees", "sensors.Threshold",
        device="dev-2", max_celsius=35.0),
    row("sensors", "temperature limit for dev-2: 40", "sensors.Threshold",
        device="dev-2", max_celsius=40.0),
    unfilled("sensors", "reading 21 from dev-1 at plant-a", "sensors.Reading", "taken_at",
             device="dev-1", site="plant-a", celsius=21.0),
    # the web tests' shop: a default (qty) filled only when the text says it
    row("web", "order a cake for alice", "shop.Order", customer="alice", item="cake"),
    row("web", "order 3 cakes for customer c1", "shop.Order", customer="c1", item="cakes",
        qty=3),
    row("web", "order tea for c1 qty=2", "shop.Order", customer="c1", item="tea", qty=2),
    row("web", "job for c7", "shop.Job", customer="c7"),
]  # fmt: skip


@pytest.mark.parametrize("case", ROWS, ids=[f"{r.topology}: {r.text}" for r in ROWS])
async def test_offline_proposals(case: Row) -> None:
    topology = TOPOLOGIES[case.topology]
    proposal = await OfflineProvider(now=NOW).propose(case.text, proposable_types(topology))
    assert proposal.provider == "offline"
    assert proposal.intent_type == case.intent_type, proposal
    assert proposal.fields == case.fields, proposal
    assert proposal.missing == case.missing, proposal
    if case.intent_type is None:
        assert proposal.notes  # says why: nothing matches, or which types tie
        with pytest.raises(ProposalError, match="no intent type matches the text"):
            proposal.build(topology)
    elif case.missing:
        with pytest.raises(ProposalError, match=f"could not fill {', '.join(case.missing)} "):
            proposal.build(topology)
    else:
        intent = proposal.build(topology)
        assert intent.intent_type == case.intent_type
        assert intent.model_dump(include=set(case.fields)) == case.fields


async def test_nothing_is_read_where_the_text_has_nothing() -> None:
    provider = OfflineProvider(now=NOW)
    types = proposable_types(orders.topology)
    for text in ("", "   "):
        proposal = await provider.propose(text, types)
        assert proposal.intent_type is None and proposal.notes == ("the text is empty",)
    proposal = await provider.propose("what's the weather like in Paris", types)
    assert proposal.notes == (
        "no intent type matches the text (known: orders.AuditBalance, orders.Deposit, "
        "orders.Transfer, orders.Withdraw)",
    )
    tied = await provider.propose("deposit or withdraw 30 acct-7", types)
    assert tied.notes == (
        "ambiguous: the text matches orders.Deposit and orders.Withdraw equally; name the type",
    )


async def test_what_is_not_used_and_what_does_not_validate_is_said() -> None:
    provider = OfflineProvider(now=NOW)
    types = proposable_types(orders.topology)
    two = await provider.propose("withdraw 5 from acct-7 and 3 from acct-8", types)
    assert two.fields == {"account": "acct-7", "amount": 5}
    assert two.notes == ("not used: 3, acct-8",)
    zero = await provider.propose("withdraw 0 from acct-7", types)
    assert zero.missing == () and zero.fields == {"account": "acct-7", "amount": 0}
    assert zero.notes == ("does not validate: amount: Input should be greater than 0",)
    with pytest.raises(ProposalError) as refused:
        zero.build(orders.topology)
    assert str(refused.value) == "orders.Withdraw: amount: Input should be greater than 0"


class Size(enum.Enum):
    SMALL = "small"
    LARGE = "large"


class BookRoom(Intent, type_name="hotel.BookRoom", key="guest", requires=["book:guest/{guest}"]):
    """Book a room for a guest on a day."""

    guest: str
    day: date
    size: Size
    deposit: Decimal
    breakfast: bool = False


async def test_enums_dates_decimals_and_booleans_of_any_intent_type() -> None:
    provider = OfflineProvider(now=NOW)
    proposal = await provider.propose(
        "book a larg room for g-17 tomorrow with breakfast, deposit 12.50", [BookRoom]
    )
    assert proposal.intent_type == "hotel.BookRoom"
    assert proposal.fields == {
        "guest": "g-17", "day": date(2026, 1, 6), "size": Size.LARGE,
        "deposit": Decimal("12.50"), "breakfast": True,
    }  # fmt: skip
    assert proposal.build([BookRoom]) == BookRoom(
        guest="g-17", day=date(2026, 1, 6), size=Size.LARGE, deposit=Decimal("12.50"),
        breakfast=True,
    )  # fmt: skip
    vague = await provider.propose("book a room for g-17", [BookRoom])
    assert vague.missing == ("day", "size", "deposit")  # the default (breakfast) is not asked


async def test_a_proposal_as_json() -> None:
    types = proposable_types(sensors.topology)
    proposal = await OfflineProvider(now=NOW).propose(
        "dev-1 at plant-a reads 21.5°C at 10:30 today", types
    )
    data = proposal.as_json()
    assert data == {
        "text": "dev-1 at plant-a reads 21.5°C at 10:30 today",
        "intent_type": "sensors.Reading",
        "fields": {"device": "dev-1", "site": "plant-a", "celsius": 21.5,
                   "taken_at": "2026-01-05T10:30:00Z"},
        "missing": [], "notes": [], "provider": "offline",
    }  # fmt: skip
    assert orjson.loads(orjson.dumps(data)) == data


def test_build_names_the_type_it_does_not_know() -> None:
    proposal = Proposal("x", "orders.Nope", {"account": "a"}, provider="offline")
    with pytest.raises(ProposalError, match=r"unknown intent type 'orders.Nope' \(known: "):
        proposal.build(orders.topology)
    by_class_name = Proposal("x", "Deposit", {"account": "a", "amount": 2})
    assert by_class_name.build([orders.Deposit, orders.Withdraw]) == orders.Deposit(
        account="a", amount=2
    )


def test_proposable_types_are_the_ones_taken_from_outside() -> None:
    assert [t.intent_type for t in proposable_types(orders.topology)] == [
        "orders.AuditBalance",
        "orders.Deposit",
        "orders.Transfer",
        "orders.Withdraw",
    ]  # fmt: skip  (not TransferCredit nor the ledger: internal; not routed-only types)
    sensor_types = [t.intent_type for t in proposable_types(sensors.topology)]
    assert sensor_types == ["sensors.Reading", "sensors.Threshold"]


def test_provider_from_names_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACKETFLOW_NL_PROVIDER", raising=False)
    assert isinstance(provider_from(None), OfflineProvider)
    assert isinstance(provider_from("offline"), Provider)
    model = provider_from("pydantic-ai:test")
    assert isinstance(model, ModelProvider) and model.name == "pydantic-ai:test"
    monkeypatch.setenv("PACKETFLOW_NL_PROVIDER", "pydantic-ai:test")
    assert isinstance(provider_from(None), ModelProvider)
    with pytest.raises(ValueError, match=r"unknown proposal provider 'gpt': use offline or "):
        provider_from("gpt")
    with pytest.raises(ValueError, match=r"provider 'pydantic-ai:nowhere:x': Unknown model"):
        provider_from("pydantic-ai:nowhere:x")


def test_neither_the_cli_nor_the_package_loads_pydantic_ai() -> None:
    code = (
        "import sys, packetflow.cli.app\n"
        "assert 'packetflow.mcp.proposals' not in sys.modules, 'the CLI loads proposals'\n"
        "import packetflow.mcp.proposals\n"
        "assert 'pydantic_ai' not in sys.modules, 'pydantic_ai is loaded'\n"
        "assert 'dateparser' not in sys.modules, 'dateparser is loaded'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
