"""The model provider: a language model proposes the intent, through pydantic-ai.

Each intent type is one output tool of a pydantic-ai ``Agent`` (its schema the intent
model's own, its description the type's docstring and required capabilities), next to
``cannot_propose`` for a text that fits no type or lacks a required value: the model can
only answer with a valid intent or say why not. The model is a pydantic-ai ``Model`` or a
model string such as ``openai:gpt-4o`` (``$OPENAI_API_KEY``, ``$OPENAI_BASE_URL``).

pydantic-ai (``pip install 'packetflow[ai]'``) is imported only here, and only once a
provider is made, so nothing else pays for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from packetflow.core.intent import Intent
from packetflow.mcp.proposals.base import Proposal, ProposalError, own_doc

if TYPE_CHECKING:
    from pydantic_ai import Agent
    from pydantic_ai.models import Model

CANNOT_PROPOSE = "cannot_propose"


class CannotPropose(BaseModel):
    """No intent can be proposed: no type fits the text, or the text gives no value for a
    required field of the one that does. Never guess a value instead."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="why, in one sentence")
    intent_type: str | None = Field(
        default=None, description="the intent type the text asks for, if one fits"
    )
    fields: dict[str, Any] = Field(
        default_factory=dict, description="the values the text does give, by field name"
    )
    missing: list[str] = Field(
        default_factory=list, description="the required fields the text gives no value for"
    )


def tool_names(types: Sequence[type[Intent]]) -> dict[str, type[Intent]]:
    """A tool name for each type (``orders.Deposit`` -> ``orders_Deposit``: model APIs take
    letters, digits, ``_`` and ``-`` only), unique, by name."""
    out: dict[str, type[Intent]] = {}
    for cls in types:
        base = re.sub(r"[^A-Za-z0-9_-]", "_", cls.intent_type)[:60] or "intent"
        name, n = base, 2
        while name in out or name == CANNOT_PROPOSE:
            name, n = f"{base}_{n}", n + 1
        out[name] = cls
    return out


def describe(cls: type[Intent]) -> str:
    """What a model is told about one intent type's tool."""
    doc = own_doc(cls) or f"Propose a {cls.intent_type} intent."
    requires = ", ".join(str(c) for c in cls.required_capabilities) or "nothing"
    return f"{doc}\n\nIntent type {cls.intent_type}; requires {requires}."


def instructions(tools: dict[str, type[Intent]]) -> str:
    """The agent's instructions: the task, the honesty rule and the types to choose from."""
    lines = [
        "You turn a request written in plain language into one intent (a typed request "
        "for something to be done). Answer by calling exactly one tool: the tool of the "
        "intent type the request asks for, with the values the request gives.",
        "Never invent a value. If the request gives no value for a required field, call "
        f"{CANNOT_PROPOSE} with that intent type, the values it does give and the missing "
        f"fields. If no intent type fits, call {CANNOT_PROPOSE} with intent_type null.",
        "",
        "Intent types:",
    ]
    for name, cls in tools.items():
        summary = (own_doc(cls).splitlines() or [""])[0]
        fields = ", ".join(
            f"{field}{'' if info.is_required() else ' (optional)'}"
            for field, info in cls.model_fields.items()
        )
        lines.append(
            f"- {name} ({cls.intent_type}){': ' + summary if summary else ''} "
            f"Fields: {fields or 'none'}."
        )
    return "\n".join(lines)


class ModelProvider:
    """Proposes intents with a language model (see the module docstring). ``model``: a
    pydantic-ai ``Model`` or a model string (``openai:gpt-4o``); ``retries``: how often
    the model may try again after an answer that does not validate."""

    def __init__(self, model: Model | str, *, retries: int = 1) -> None:
        from pydantic_ai.models import infer_model

        self.model: Model = infer_model(model)
        spec = model if isinstance(model, str) else f"{self.model.system}:{self.model.model_name}"
        self.name = f"pydantic-ai:{spec}"
        self.retries = retries
        self._agents: dict[tuple[type[Intent], ...], tuple[Agent[None, Any], dict[str, Any]]] = {}

    async def propose(self, text: str, types: Sequence[type[Intent]]) -> Proposal:
        """The intent the model reads in ``text``, among ``types``; :class:`ProposalError`
        when the model cannot be asked or gives no usable answer."""
        from pydantic_ai.exceptions import AgentRunError, UserError

        text = text.strip()
        if not text:
            return Proposal(text, None, notes=("the text is empty",), provider=self.name)
        if not types:
            return Proposal(
                text, None, notes=("no intent types to choose from",), provider=self.name
            )
        agent, tools = self._agent(tuple(types))
        try:
            result = await agent.run(text)
        except (AgentRunError, UserError) as exc:
            raise ProposalError(f"{self.name}: {_one_line(exc)}") from exc
        except Exception as exc:  # a connection refused, a bad key: the SDK's own errors
            raise ProposalError(f"{self.name}: {type(exc).__name__}: {_one_line(exc)}") from exc
        return self._proposal(text, result.output, tools)

    def _agent(self, types: tuple[type[Intent], ...]) -> tuple[Agent[None, Any], dict[str, Any]]:
        """The agent for these types (made once per set of types)."""
        known = self._agents.get(types)
        if known is not None:
            return known
        from pydantic_ai import Agent, ToolOutput

        tools = tool_names(types)
        outputs: list[Any] = [
            ToolOutput(cls, name=name, description=describe(cls)) for name, cls in tools.items()
        ]
        outputs.append(ToolOutput(CannotPropose, name=CANNOT_PROPOSE))
        agent: Agent[None, Any] = Agent(
            self.model,
            output_type=outputs,
            instructions=instructions(tools),
            retries=self.retries,
            name="packetflow-proposals",
        )
        self._agents[types] = (agent, dict(tools))
        return agent, dict(tools)

    def _proposal(self, text: str, output: Any, tools: dict[str, type[Intent]]) -> Proposal:
        if isinstance(output, Intent):
            return Proposal(text, output.intent_type, output.model_dump(), provider=self.name)
        if not isinstance(output, CannotPropose):  # pragma: no cover - the outputs are closed
            raise ProposalError(f"{self.name}: unexpected answer {output!r}")
        notes: tuple[str, ...] = (output.reason,) if output.reason else ()
        by_type = {cls.intent_type: cls for cls in tools.values()}
        cls = by_type.get(output.intent_type or "") or tools.get(output.intent_type or "")
        if cls is None:
            if output.intent_type:
                notes += (f"the model named an unknown intent type {output.intent_type!r}",)
            return Proposal(text, None, notes=notes, provider=self.name)
        fields = {k: v for k, v in output.fields.items() if k in cls.model_fields}
        missing = tuple(
            name
            for name, info in cls.model_fields.items()
            if info.is_required() and name not in fields
        )
        return Proposal(text, cls.intent_type, fields, missing, notes, self.name)


def _one_line(exc: BaseException) -> str:
    message = str(exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__
