"""The ``propose_intent`` tool: text in, a proposed intent of the topology's types out
(through a :mod:`~packetflow.mcp.proposals` provider), with whether the caller's token
would allow it. It publishes nothing: the agent shows the proposal to its user and, once
confirmed, calls the intent's own tool, which is checked again. A model never gains a
capability."""

from __future__ import annotations

from typing import Any

import mcp_types as types

from packetflow.core.context import Context
from packetflow.mcp.host import Host
from packetflow.mcp.proposals import ProposalError, Provider, proposable_types, provider_from
from packetflow.mcp.server import Extra, text_result

PROPOSE = "propose_intent"
MAX_TEXT = 2000


def propose_tool(host: Host, provider: Provider | None = None) -> Extra:
    """The tool, proposing with ``provider`` (default: ``$PACKETFLOW_NL_PROVIDER``, else
    the offline one)."""
    chosen = provider or provider_from(None)
    topology = host.topology
    kinds = proposable_types(topology)
    tool = types.Tool(
        name=PROPOSE,
        title="Propose an intent from text",
        description=(
            f"Turn a request in plain words into an intent of {topology.name} "
            f"({', '.join(k.intent_type for k in kinds)}). Publishes nothing: show the "
            "proposal to the user, and once they confirm, call the intent's tool with its "
            "arguments. Says what it could not fill and whether your token would allow it."
        ),
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": MAX_TEXT}},
            "required": ["text"],
        },
        annotations=types.ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    )

    async def call(arguments: dict[str, Any], context: Context) -> types.CallToolResult:
        text = arguments.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return text_result({"reason": "invalid", "error": f"text must be 1 to {MAX_TEXT} "
                                "characters"}, error=True)  # fmt: skip
        try:
            proposal = await chosen.propose(text, kinds)
        except ProposalError as exc:  # a model that could not be reached or kept failing
            return text_result({"reason": "no-proposal", "error": str(exc)}, error=True)
        out: dict[str, Any] = {"proposal": proposal.as_json()}
        try:
            intent = proposal.build(topology)
        except ProposalError as exc:
            out.update(complete=False, error=str(exc))
            return text_result(out)
        out.update(complete=True, tool=type(intent).intent_type,
                   arguments=intent.model_dump(mode="json"))  # fmt: skip
        denial = host.check(intent.requirements(), context, type(intent).intent_type)
        out["allowed"] = denial is None
        if denial is not None:
            out["refusal"] = {"reason": denial.reason, "error": denial.message,
                              "missing": list(denial.missing)}  # fmt: skip
        return text_result(out)

    return tool, call
