"""The README's Web section, run as written: a worker serving HTTP for the README's shop,
curl publishing with a token, reading state, refused without one, and a live feed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"


def _block(kind: str, name: str) -> str:
    found = re.search(rf"<!-- readme-test: {re.escape(name)} -->\n```{kind}\n(.*?)```",
                      README.read_text(), re.S)  # fmt: skip
    assert found, f"README has no {name} block"
    return found.group(1)


def test_the_web_section_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(_block("python", "shop.py"))
    (tmp_path / "web.sh").write_text(_block("sh", "web.sh"))
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKETFLOW_")}
    env["PACKETFLOW_HOME"] = str(tmp_path / "home")
    run = subprocess.run(
        ["bash", "web.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
    )
    out = run.stdout
    assert '"ready":true' in out, out + run.stderr
    assert '"intent_id"' in out and '"topic":"orders"' in out
    assert '"key":"c1","value":30' in out  # the state, after the first order
    assert '"reason":"no-token"' in out  # the second, without a token
    assert "event: intent" in out and '"customer":"c2"' in out  # the live feed saw the third


def test_topology_show_lists_the_declared_routes(tmp_path: Path) -> None:
    (tmp_path / "routed.py").write_text(
        _block("python", "shop.py")
        + "\nfrom packetflow import web\n\n"
        + 'web.post(topology, "/customers/{customer}/orders", PlaceOrder)\n'
    )
    run = subprocess.run(
        [str(REPO / ".venv/bin/packetflow"), "topology", "show", "routed"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "POST /customers/{customer}/orders  -> shop.PlaceOrder" in run.stdout
