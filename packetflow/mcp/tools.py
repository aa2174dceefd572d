"""A topology's intent types as MCP tools: one tool per type the topology accepts from
outside (consumed by a reactor or agent, not internal), named by its type name, described
by its docstring, its input schema the intent model's own JSON schema plus one reserved
argument, ``wait`` (seconds to wait for the reply; absent: return once published).

:func:`may_use` decides what ``tools/list`` shows a caller: a tool whose every
requirement some held capability could meet for some value of its fields. Only a
listing: the call itself is checked by the guard on the real values.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any

import mcp_types as types

from packetflow.core.capability import Capability, CapabilityHierarchy
from packetflow.core.intent import Intent
from packetflow.mcp.hints import hints_of
from packetflow.mcp.proposals import proposable_types as tool_types  # the same types

MAX_WAIT = 60.0
__all__ = ["MAX_WAIT", "could_match", "may_use", "tool_of", "tool_types", "wait_argument"]


def wait_argument(cls: type[Intent]) -> str:
    """The reserved argument's name for ``cls``: ``wait``, or ``_wait`` if a field has it."""
    return "_wait" if "wait" in cls.model_fields else "wait"


def tool_of(cls: type[Intent]) -> types.Tool:
    """The MCP tool that publishes intents of ``cls``."""
    schema: dict[str, Any] = cls.model_json_schema()
    schema.setdefault("properties", {})[wait_argument(cls)] = {
        "type": "number",
        "exclusiveMinimum": 0,
        "maximum": MAX_WAIT,
        "description": "seconds to wait for the reply (absent: return once published)",
    }
    hints = hints_of(cls)
    requires = ", ".join(str(c) for c in cls.required_capabilities) or "nothing"
    doc = inspect.getdoc(cls) or cls.intent_type
    return types.Tool(
        name=cls.intent_type,
        title=hints.title,
        description=f"{doc}\n\nRequires: {requires}.",
        input_schema=schema,
        annotations=types.ToolAnnotations(
            title=hints.title,
            read_only_hint=hints.read_only,
            destructive_hint=hints.destructive,
            idempotent_hint=hints.idempotent,
            open_world_hint=hints.open_world,
        ),
    )


def may_use(
    held: tuple[Capability, ...], cls: type[Intent], hierarchy: CapabilityHierarchy
) -> bool:
    """Some held capability could meet each of ``cls``'s requirements (fields unknown)."""
    return all(
        any(
            _implies_operation(hierarchy, h.operation, need.operation)
            and could_match(h.resource, need.resource)
            for h in held
        )
        for need in cls.required_capabilities
    )


def _implies_operation(hierarchy: CapabilityHierarchy, held: str, required: str) -> bool:
    return required in hierarchy.operations_implied_by(held)


def could_match(pattern: str, template: str) -> bool:
    """A held resource pattern matches the template for some value of its ``{fields}``."""
    if pattern in ("*", "**"):
        return True
    held, wanted = pattern.split("/"), template.split("/")
    for i, segment in enumerate(held):
        if segment == "**":
            return True
        if i >= len(wanted):
            return False
        if "{" in wanted[i] or segment == "*":
            continue
        if not fnmatch.fnmatchcase(wanted[i], segment):
            return False
    return len(held) == len(wanted)
