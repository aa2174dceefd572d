"""The README's MCP section, run as written: a worker serving MCP at /mcp for the README's
shop, the official client listing tools, calling one, refused on another customer, and a
proposal from text; the desktop host configuration parses and names a real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _block(kind: str, name: str) -> str:
    found = re.search(
        rf"<!-- readme-test: {re.escape(name)} -->\n```{kind}\n(.*?)```", README.read_text(), re.S
    )
    assert found, f"README has no {name} block"
    return found.group(1)


def test_the_mcp_section_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(_block("python", "shop.py"))
    (tmp_path / "mcp_client.py").write_text(_block("python", "mcp_client.py"))
    (tmp_path / "mcp.sh").write_text(_block("sh", "mcp.sh"))
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKETFLOW_")}
    env["PACKETFLOW_HOME"] = str(tmp_path / "home")
    run = subprocess.run(
        ["bash", "mcp.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
    )
    out = run.stdout
    assert "tools: ['propose_intent', 'shop.PlaceOrder']" in out, out + run.stderr
    assert "'topic': 'orders'" in out and "'intent_id'" in out
    assert "refused: {'reason': 'insufficient'" in out and "order:customer/c2" in out
    assert "proposed: shop.PlaceOrder {'customer': 'c1', 'amount': 12} allowed: True" in out


def test_the_desktop_host_configuration_names_the_serve_command() -> None:
    config = json.loads(_block("json", "claude_desktop_config.json"))
    (server,) = config["mcpServers"].values()
    assert server["command"].endswith("/.venv/bin/packetflow")
    assert server["args"][:2] == ["mcp", "serve"] and "--stdio" in server["args"]
    assert "PACKETFLOW_TOKEN" in server["env"]
    # the options it passes are the command's own
    shown = subprocess.run(
        [str(REPO / ".venv/bin/packetflow"), "mcp", "serve", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    for option in (a for a in server["args"] if a.startswith("--")):
        assert option in shown.stdout, option
