"""``packetflow intent TEXT`` on a ``memory://`` broker in this process (typer's CliRunner
around the real entry point, so user errors are one line and exit 2): a dry run shows the
proposal, a field it could not fill is refused, ``--yes`` publishes (read back from the
topic), and a token without the capability is refused before anything is published."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from packetflow import Client, KeyPair, KeyStore, Received, issue_token
from packetflow.cli.app import main
from topologies import orders


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def packetflow(*args: str, input: str | None = None) -> Run:
    """``packetflow ARGS`` through :func:`main` (exit codes, one-line errors), captured."""
    runner = CliRunner()
    code = 0
    with runner.isolation(input=input) as (stdout, stderr, _):
        argv = sys.argv
        sys.argv = ["packetflow", *args]
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
        return Run(code, stdout.getvalue().decode(), stderr.getvalue().decode())


def published(url: str, topic: str = "accounts") -> list[Received]:
    async def read() -> list[Received]:
        async with Client(url, orders.topology) as client:
            return await client.read(topic)

    return asyncio.run(read())


def one_error_line(run: Run) -> str:
    assert run.code == 2, run
    assert "Traceback" not in run.stdout + run.stderr, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


@pytest.fixture
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyPair:
    """The key the topology's tokens are signed with, the only one trusted here."""
    for name in ("PACKETFLOW_TOKEN", "PACKETFLOW_NL_PROVIDER", "PACKETFLOW_TOPOLOGY",
                 "PACKETFLOW_BROKER"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PACKETFLOW_KEYS", str(tmp_path / "keys"))
    return KeyStore(tmp_path / "keys").generate("proposals")


@pytest.fixture
def url() -> Iterator[str]:
    yield f"memory://proposals-{uuid.uuid4().hex[:8]}"


def intent(url: str, text: str, *options: str, input: str | None = None) -> Run:
    return packetflow("intent", text, "-t", "topologies.orders", "-b", url, *options,
                      input=input)  # fmt: skip


def test_a_dry_run_shows_the_proposal(key: KeyPair, url: str) -> None:
    run = intent(url, "please deposit 30 into acct-7", "--dry-run")  # no token needed to look
    assert run.code == 0, run
    lines = [line.split() for line in run.stdout.splitlines()]
    assert lines[0] == ["proposed", "by", "offline:", "orders.Deposit"]
    assert ["account", "acct-7"] in lines and ["amount", "30"] in lines
    assert lines[-1] == ["dry", "run:", "not", "published"]
    assert published(url) == []


def test_a_field_it_could_not_fill_is_refused(key: KeyPair, url: str) -> None:
    token = issue_token("teller-1", ["teller:account/*"], key=key, ttl="1h")
    run = intent(url, "transfer 50 from acct-1 to acct-2", "--yes", "--token", token)
    line = one_error_line(run)
    assert line.startswith("error: could not fill transfer_id for orders.Transfer")
    assert ["transfer_id", "(could", "not", "fill)"] in [s.split() for s in run.stdout.splitlines()]
    assert published(url) == []


def test_yes_publishes_it_with_the_token(key: KeyPair, url: str) -> None:
    token = issue_token("teller-1", ["teller:account/*"], key=key, ttl="1h")
    run = intent(url, "deposit 30 into acct-7", "--yes", "--token", token)
    assert run.code == 0, run
    said = re.search(r"published orders\.Deposit \(intent (\w+)\) to accounts\[\d\] at offset 0",
                     run.stdout)  # fmt: skip
    assert said is not None, run.stdout
    [record] = published(url)
    assert record.intent == orders.Deposit(account="acct-7", amount=30)
    assert record.context is not None
    assert record.context.intent_id == said.group(1)
    assert record.context.principal == "teller-1" and record.context.token == token


def test_it_asks_before_publishing(key: KeyPair, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKETFLOW_TOKEN", issue_token("teller-1", ["teller:account/*"],
                                                       key=key, ttl="1h"))  # fmt: skip
    declined = intent(url, "withdraw 5 from acct-7", input="n\n")
    assert declined.code == 1 and "Publish this orders.Withdraw?" in declined.stdout
    assert published(url) == []
    accepted = intent(url, "withdraw 5 from acct-7", input="y\n")
    assert accepted.code == 0, accepted
    assert [r.intent for r in published(url)] == [orders.Withdraw(account="acct-7", amount=5)]


def test_a_token_without_the_capability_is_refused_before_publishing(
    key: KeyPair, url: str
) -> None:
    auditor = issue_token("auditor-1", ["auditor:account/*"], key=key, ttl="1h")
    run = intent(url, "withdraw 5 from acct-7", "--yes", "--token", auditor)
    line = one_error_line(run)
    assert line.endswith("auditor-1 lacks withdraw:account/acct-7 for orders.Withdraw"), line
    assert published(url) == []
    # refused before the user is asked to confirm what could only be refused
    unasked = intent(url, "withdraw 5 from acct-7", "--token", auditor, input="y\n")
    assert "Publish this" not in unasked.stdout + unasked.stderr
    assert one_error_line(unasked) == line and published(url) == []
    # the same token may read the balance: the check is per capability, not per token
    allowed = intent(url, "what's the balance of acct-7?", "--yes", "--token", auditor)
    assert allowed.code == 0, allowed
    assert [r.intent for r in published(url)] == [orders.AuditBalance(account="acct-7")]


def test_a_forged_token_is_refused_before_publishing(key: KeyPair, url: str) -> None:
    forged = issue_token("teller-1", ["teller:account/*"], key=KeyPair.generate("rogue"),
                         ttl="1h")  # fmt: skip
    run = intent(url, "deposit 30 into acct-7", "--yes", "--token", forged)
    assert "rogue" in one_error_line(run)
    assert published(url) == []


@pytest.mark.parametrize(
    ("text", "options", "pattern"),
    [
        pytest.param("what's the weather like in Paris", (),
                     r"error: no intent type matches the text \(known: orders\.AuditBalance",
                     id="no-match"),
        pytest.param("deposit 30 into acct-7", ("--provider", "gpt"),
                     r"error: unknown proposal provider 'gpt'", id="provider"),
        pytest.param("deposit 30 into acct-7", (),
                     r"error: orders\.Deposit requires deposit:account/acct-7 and topology "
                     r"orders accepts signed tokens only: pass --token", id="no-token"),
        pytest.param("withdraw 0 from acct-7", (),
                     r"error: orders\.Withdraw: amount: Input should be greater than 0",
                     id="invalid"),
    ],
)  # fmt: skip
def test_what_is_wrong_is_said_in_one_line(
    key: KeyPair, url: str, text: str, options: tuple[str, ...], pattern: str
) -> None:
    assert re.match(pattern, one_error_line(intent(url, text, "--yes", *options)))
    assert published(url) == []
