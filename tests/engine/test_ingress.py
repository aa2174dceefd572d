"""The one way in from outside Python (CLI send, web POST, MCP tool call): JSON fields and a
token made into an intent and its context, with a one-line error for whatever is wrong, and
a word on what the workers could only refuse."""

from __future__ import annotations

import time

import pytest

from packetflow import KeyPair, issue_token
from packetflow.engine.ingress import IngressError, hopeless, submission
from topologies import orders

KEY = KeyPair.generate("ingress")
TOKEN = issue_token("teller-1", ["teller:account/*"], key=KEY, ttl="1h")
DEPOSIT = {"type": "orders.Deposit", "data": {"account": "a", "amount": 5}}


def test_fields_become_an_intent_with_its_context() -> None:
    item = submission(orders.topology, {**DEPOSIT, "token": TOKEN, "key": "k"}, deadline=30)
    assert item.intent == orders.Deposit(account="a", amount=5)
    assert item.context.principal == "teller-1"  # the token's holder
    assert item.context.token == TOKEN
    assert item.context.deadline is not None
    assert 25 < item.context.deadline.timestamp() - time.time() <= 30
    assert (item.key, item.topic) == ("k", None)
    assert hopeless(orders.topology, item) is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "orders.Nope", "data": {}}, r"unknown intent type 'orders\.Nope'"),
        ({"type": "orders.Deposit", "data": {"account": "a"}}, r"Deposit: amount: Field required"),
        ({**DEPOSIT, "data": [1]}, r'"data" must be a JSON object'),
        ({**DEPOSIT, "token": "not.a.token"}, r"^token: "),
        ({**DEPOSIT, "token": TOKEN, "capabilities": ["a:b"]}, r'give "token" or "capabilities"'),
        ({**DEPOSIT, "capabilities": "a:b"}, r'"capabilities" must be a list'),
        ({**DEPOSIT, "key": 5}, r'"key" must be a string'),
    ],
)
def test_whatever_is_wrong_is_said_in_one_line(fields: dict[str, object], message: str) -> None:
    with pytest.raises(IngressError, match=message) as error:
        submission(orders.topology, fields)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("fields", "deadline", "code"),
    [
        (DEPOSIT, None, "no-token"),
        ({**DEPOSIT, "token": TOKEN}, -1.0, "deadline"),
        ({**DEPOSIT, "token": TOKEN, "principal": "bob"}, None, "principal-mismatch"),
        (
            {"type": "orders.TransferCredit", "token": TOKEN,
             "data": {"transfer_id": "t", "source": "a", "target": "b", "amount": 1}},
            None,
            "internal",
        ),
    ],
)  # fmt: skip
def test_what_workers_could_only_refuse_is_named(
    fields: dict[str, object], deadline: float | None, code: str
) -> None:
    why = hopeless(orders.topology, submission(orders.topology, fields, deadline=deadline))
    assert why is not None and why.code == code


def test_an_expired_token_is_named() -> None:
    old = issue_token("teller-1", ["teller:account/*"], key=KEY, ttl=1, now=1_000)
    why = hopeless(orders.topology, submission(orders.topology, {**DEPOSIT, "token": old}))
    assert why is not None and why.code == "expired"
    assert why.message.startswith("the token of teller-1 expired at 1970")
