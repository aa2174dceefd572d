"""The model provider (pydantic-ai): with its ``TestModel``, and over real HTTP against a
fake OpenAI-compatible server started here (the adapter's own request: each intent type an
output tool with its schema, the instructions naming them), answering with a tool call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from openai import AsyncOpenAI
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.providers.openai import OpenAIProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from packetflow import Intent
from packetflow.mcp.proposals import ModelProvider, ProposalError, proposable_types
from topologies import orders

TYPES = proposable_types(orders.topology)
TOOLS = ["orders_AuditBalance", "orders_Deposit", "orders_Transfer", "orders_Withdraw",
         "cannot_propose"]  # fmt: skip


async def test_the_model_answers_with_an_intent() -> None:
    model = TestModel(custom_output_args={"account": "acct-7"})  # the first tool: AuditBalance
    provider = ModelProvider(model)
    proposal = await provider.propose("how much is in acct-7?", TYPES)
    assert (proposal.intent_type, proposal.fields) == ("orders.AuditBalance", {"account": "acct-7"})
    assert proposal.missing == () and proposal.provider == "pydantic-ai:test:test"
    assert proposal.build(orders.topology) == orders.AuditBalance(account="acct-7")
    sent = model.last_model_request_parameters
    assert sent is not None and not sent.allow_text_output  # a tool call or nothing
    tools = {t.name: t for t in sent.output_tools}
    assert list(tools) == TOOLS
    deposit = tools["orders_Deposit"]
    assert deposit.parameters_json_schema["properties"] == _properties(orders.Deposit)
    assert deposit.parameters_json_schema["required"] == ["account", "amount"]
    assert "requires deposit:account/{account}" in (deposit.description or "")


def _properties(cls: type[Intent]) -> dict[str, Any]:
    """The fields of ``cls``'s JSON schema as a model sees them (pydantic-ai drops titles)."""
    return {
        name: {k: v for k, v in prop.items() if k != "title"}
        for name, prop in cls.model_json_schema()["properties"].items()
    }


def _answering(tool: str, arguments: dict[str, Any]) -> FunctionModel:
    """A model that calls ``tool`` with ``arguments``, whatever it is asked."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[ToolCallPart(tool, arguments)])

    return FunctionModel(answer, model_name="scripted")


async def test_what_the_model_cannot_fill_is_kept_to_the_type() -> None:
    model = _answering("cannot_propose", {
        "reason": "no amount given", "intent_type": "orders.Deposit",
        "fields": {"account": "acct-7", "colour": "red"}, "missing": ["colour"],
    })  # fmt: skip
    proposal = await ModelProvider(model).propose("deposit into acct-7", TYPES)
    assert proposal.intent_type == "orders.Deposit"
    assert proposal.fields == {"account": "acct-7"}  # no field the type does not have
    assert proposal.missing == ("amount",) and proposal.notes == ("no amount given",)
    with pytest.raises(ProposalError, match=r"could not fill amount for orders\.Deposit"):
        proposal.build(orders.topology)


async def test_a_type_the_model_makes_up_is_no_proposal() -> None:
    model = _answering("cannot_propose", {"reason": "nothing fits", "intent_type": "bank.Rob"})
    proposal = await ModelProvider(model).propose("rob the bank", TYPES)
    assert proposal.intent_type is None
    assert proposal.notes == ("nothing fits", "the model named an unknown intent type 'bank.Rob'")


# -- a fake OpenAI-compatible server -----------------------------------------------------


@dataclass
class FakeOpenAI:
    """Answers every chat completion with the next scripted tool call; keeps each request."""

    answers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""

    async def chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        tool, arguments = self.answers.pop(0)
        call = {"id": f"call_{len(self.requests)}", "type": "function",
                "function": {"name": tool, "arguments": json.dumps(arguments)}}  # fmt: skip
        return JSONResponse({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None,
                                     "tool_calls": [call]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        })  # fmt: skip

    def model(self) -> OpenAIChatModel:
        return OpenAIChatModel(
            "gpt-fake", provider=OpenAIProvider(base_url=self.url, api_key="sk-fake-key")
        )


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    app = Starlette(routes=[Route("/v1/chat/completions", fake.chat, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                            log_level="warning", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the fake OpenAI server did not start"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        fake.url = f"http://127.0.0.1:{port}/v1"
        yield fake
    finally:
        server.should_exit = True
        async with asyncio.timeout(10):
            await task


async def test_over_http_the_tool_call_becomes_the_proposal(fake_openai: FakeOpenAI) -> None:
    fake_openai.answers.append(("orders_Deposit", {"account": "acct-7", "amount": 30}))
    provider = ModelProvider(fake_openai.model())
    proposal = await provider.propose("deposit 30 into acct-7", TYPES)
    assert proposal.provider == "pydantic-ai:openai:gpt-fake"
    assert (proposal.intent_type, proposal.fields) == (
        "orders.Deposit",
        {"account": "acct-7", "amount": 30},
    )
    assert proposal.build(orders.topology) == orders.Deposit(account="acct-7", amount=30)

    [request] = fake_openai.requests
    assert fake_openai.headers[0]["authorization"] == "Bearer sk-fake-key"
    assert request["model"] == "gpt-fake" and request["tool_choice"] == "required"
    system, user = request["messages"]
    assert user == {"role": "user", "content": "deposit 30 into acct-7"}
    assert system["role"] == "system" and "Never invent a value" in system["content"]
    assert (
        "- orders_Transfer (orders.Transfer) Fields: transfer_id, source, target, amount."
        in (system["content"])
    )
    offered = {t["function"]["name"]: t["function"] for t in request["tools"]}
    assert list(offered) == TOOLS  # the internal TransferCredit is not offered
    for name, cls in zip(TOOLS, TYPES, strict=False):
        params = offered[name]["parameters"]
        assert params["properties"] == _properties(cls), name
        assert params["additionalProperties"] is False  # extra fields are refused
        assert cls.intent_type in offered[name]["description"]


async def test_over_http_an_invalid_answer_is_sent_back_then_refused(
    fake_openai: FakeOpenAI,
) -> None:
    bad = ("orders_Withdraw", {"account": "acct-7", "amount": -5})
    fake_openai.answers.extend([bad, bad])  # retries=1: one more chance, then it is refused
    provider = ModelProvider(fake_openai.model(), retries=1)
    with pytest.raises(ProposalError, match=r"^pydantic-ai:openai:gpt-fake: "):
        await provider.propose("withdraw -5 from acct-7", TYPES)
    assert len(fake_openai.requests) == 2
    retry = fake_openai.requests[1]["messages"][-1]
    assert retry["role"] == "tool" and "greater than 0" in retry["content"]


async def test_over_http_the_model_says_what_is_missing(fake_openai: FakeOpenAI) -> None:
    fake_openai.answers.append(("cannot_propose", {
        "reason": "the text names no transfer id", "intent_type": "orders.Transfer",
        "fields": {"source": "acct-1", "target": "acct-2", "amount": 50}, "missing": [],
    }))  # fmt: skip
    proposal = await ModelProvider(fake_openai.model()).propose(
        "transfer 50 from acct-1 to acct-2", TYPES
    )
    assert proposal.intent_type == "orders.Transfer"
    assert proposal.missing == ("transfer_id",)  # from the fields, whatever the model said
    assert proposal.notes == ("the text names no transfer id",)


async def test_a_server_that_does_not_answer_is_a_proposal_error() -> None:
    client = AsyncOpenAI(base_url="http://127.0.0.1:1/v1", api_key="k", max_retries=0)
    model = OpenAIChatModel("gpt-fake", provider=OpenAIProvider(openai_client=client))
    with pytest.raises(ProposalError, match=r"^pydantic-ai:openai:gpt-fake: "):
        await ModelProvider(model, retries=0).propose("deposit 30 into acct-7", TYPES)
