"""The payment service the trips example calls over MCP (stdio): ``charge`` a trip (a card
is declined above 2,000) and ``refund`` a charge. Run by the worker itself, as
``python topologies/payments_mcp.py``; charges live in this process only (a demo)."""

from __future__ import annotations

import hashlib

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

LIMIT = 2_000  # a charge above this is declined

server = MCPServer("payments")
charges: dict[str, int] = {}


@server.tool(annotations=ToolAnnotations(idempotent_hint=False, destructive_hint=False))
def charge(trip: str, amount: int) -> dict[str, object]:
    """Charge ``amount`` for ``trip``; declined above the card's limit."""
    if amount > LIMIT:
        raise ToolError(f"card declined: {amount} is over the limit of {LIMIT}")
    charge_id = "ch-" + hashlib.sha256(trip.encode()).hexdigest()[:12]
    charges[charge_id] = amount
    return {"charge_id": charge_id, "amount": amount}


@server.tool(annotations=ToolAnnotations(idempotent_hint=True, destructive_hint=True))
def refund(charge_id: str) -> dict[str, object]:
    """Refund a charge (refunding one twice, or one unknown here, refunds nothing more)."""
    return {"charge_id": charge_id, "refunded": charges.pop(charge_id, 0)}


if __name__ == "__main__":
    server.run("stdio")
