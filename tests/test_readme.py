"""The README's code blocks, run as written: the 20-line topology, the actors, temporal and
saga examples, and their TestDriver tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"<!-- readme-test: (\S+) -->\n```python\n(.*?)```", re.S)


def test_readme_examples_and_their_tests_pass(tmp_path: Path) -> None:
    blocks = BLOCK.findall(README.read_text())
    names = [name for name, _ in blocks]
    assert names == [
        "shop.py", "test_shop.py", "carts.py", "test_carts.py", "plant.py", "test_plant.py",
        "reminders.py", "test_reminders.py", "mcp_client.py", "trips_saga.py",
        "test_trips_saga.py", "legacy_shop.py",
    ]
    for name, code in blocks:
        (tmp_path / name).write_text(code)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shop.py",
         "test_carts.py", "test_plant.py", "test_reminders.py", "test_trips_saga.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout


def test_readme_topology_is_described_by_the_cli(tmp_path: Path) -> None:
    (name, code), *_ = BLOCK.findall(README.read_text())
    (tmp_path / name).write_text(code)
    run = subprocess.run(
        [sys.executable, "-m", "packetflow", "topology", "show", "shop"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "place_order  <- orders, state int" in run.stdout
    expected = "shop.PlaceOrder v1  -> orders, key customer; requires order:customer/{customer}"
    assert expected in run.stdout
