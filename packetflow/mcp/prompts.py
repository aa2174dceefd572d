"""Prompts an MCP host offers its user: why an intent was denied, and what the dead
letters of the last hours say. Each is built from the records themselves (read with the
caller's ``observe:`` capability), so the model explains facts, not guesses."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import orjson

from packetflow.engine.topology import Topology

EXPLAIN_DENIAL = "explain-denial"
SUMMARISE_DEAD_LETTERS = "summarise-dead-letters"


def listing() -> list[types.Prompt]:
    return [
        types.Prompt(
            name=EXPLAIN_DENIAL,
            title="Explain a denial",
            description="Why PacketFlow refused an intent, and which capability would allow it",
            arguments=[
                types.PromptArgument(
                    name="intent_id",
                    description="the denied intent's id (default: the latest denial)",
                    required=False,
                )
            ],
        ),
        types.Prompt(
            name=SUMMARISE_DEAD_LETTERS,
            title="Summarise dead letters",
            description="What went wrong with the records set aside as dead letters lately",
            arguments=[
                types.PromptArgument(
                    name="hours", description="how far back (default 1)", required=False
                )
            ],
        ),
    ]


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def explain_denial(topology: Topology, denial: dict[str, Any] | None) -> str:
    if denial is None:
        return (
            f"The topology {topology.name} has denied nothing in the time looked at. "
            "Say so, and explain how PacketFlow checks capabilities on every record."
        )
    hierarchy = topology.hierarchy.as_dict()
    return (
        f"PacketFlow (topology {topology.name}) refused this intent and set it aside on "
        "its denied topic. Explain to its sender, in plain words, why it was refused and "
        "which capability (operation:resource) a token would need to be allowed; say who "
        "can grant it (the token's issuer) and do not suggest ways around the check.\n\n"
        f"The denial:\n{_json(denial)}\n\n"
        f"Operations that imply others in this topology: {_json(hierarchy)}"
    )


def summarise_dead_letters(topology: Topology, hours: float, digest: dict[str, Any]) -> str:
    return (
        f"These are the records PacketFlow (topology {topology.name}) set aside as dead "
        f"letters in the last {hours:g} hour(s): counts by reason and by intent type, and "
        "the latest records. Summarise what went wrong, group similar failures, and say "
        "what to fix first (in the senders or in the reactors). Dead letters can be "
        "replayed with `packetflow replay` once fixed.\n\n"
        f"{_json(digest)}"
    )
