"""The command line: what is wrong is said in one line (exit 2), for mistakes in topology
modules and for sends the topology could only refuse (``--debug`` shows the traceback); the
worker secret and the keys a worker may hold."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from support.workerproc import WORKER_KEY, assert_user_error, cli

from packetflow import KeyStore, issue_token

DEAD_BROKER = "kafka://127.0.0.1:1"  # refused at once; every check below fails before it
DEPOSIT = '{"account": "a", "amount": 5}'
TOKEN = issue_token("teller-1", ["teller:account/*"], key=WORKER_KEY, ttl="1h")

HEADER = """\
from packetflow import Context, Intent, Topology
"""

MODULES = {
    "syntax-error": ("def broken(:\n", r"SyntaxError: .*\(.*broken_mod\.py:2\)"),
    "import-error": ("import no_such_package_here\n", r"ModuleNotFoundError: No module named"),
    "bad-guarantee": (
        'topology = Topology("t", processing_guarantee="twice")\n',
        r"TopologyError: processing_guarantee 'twice'",
    ),
    "requires-missing-field": (
        'class Bad(Intent, requires=["x:y/{nope}"]):\n    a: int\n',
        r"TypeError: Bad: required capability x:y/\{nope\} names unknown field 'nope'",
    ),
    "open-intent-not-public": (
        'topology = Topology("t")\n'
        "class Open(Intent):\n    a: int\n"
        '@topology.reactor(Open, topic="opens")\n'
        "def react(intent, ctx):\n    return None\n",
        r"TopologyError: reactor react consumes Open, which requires no capability and is not "
        r"internal.*public=True",
    ),
}


def _module(tmp_path: Path, body: str) -> str:
    path = tmp_path / "broken_mod.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


@pytest.mark.parametrize(("body", "pattern"), MODULES.values(), ids=MODULES.keys())
@pytest.mark.parametrize("command", ["worker", "show"])
def test_a_broken_topology_module_is_a_user_error(
    tmp_path: Path, body: str, pattern: str, command: str
) -> None:
    module = _module(tmp_path, body)
    args = ("worker", module, "-b", DEAD_BROKER) if command == "worker" else (
        "topology", "show", module)
    assert_user_error(cli(*args), pattern)


def test_a_topology_without_reactors_is_a_user_error(tmp_path: Path) -> None:
    module = _module(tmp_path, 'topology = Topology("idle")\n')
    assert_user_error(cli("worker", module, "-b", DEAD_BROKER), r"topology 'idle' has no reactors")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    module = _module(tmp_path, "import no_such_package_here\n")
    result = cli("--debug", "worker", module, "-b", DEAD_BROKER)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        pytest.param(
            ("orders.Deposit", DEPOSIT),
            r"requires deposit:account/a and topology orders accepts signed tokens only",
            id="no-token",
        ),
        pytest.param(
            ("orders.Deposit", DEPOSIT, "--token", TOKEN, "--deadline", "-5"),
            r"the deadline of this orders\.Deposit has already passed",
            id="deadline-past",
        ),
        pytest.param(
            ("orders.Deposit", DEPOSIT, "--token", TOKEN, "--deadline", "0"),
            r"the deadline of this orders\.Deposit has already passed",
            id="deadline-zero",
        ),
        pytest.param(
            ("orders.TransferCredit",
             '{"transfer_id": "t", "source": "a", "target": "b", "amount": 1}', "--token", TOKEN),
            r"orders\.TransferCredit is internal: only workers emit it",
            id="internal-type",
        ),
        pytest.param(
            ("orders.Deposit", DEPOSIT, "--token", TOKEN, "-p", "bob"),
            r"--principal bob is not the token's holder \(teller-1\)",
            id="principal-mismatch",
        ),
        pytest.param(
            ("orders.Deposit", DEPOSIT, "--token",
             issue_token("teller-1", ["teller:account/*"], key=WORKER_KEY, ttl=1, now=1_000)),
            r"the token of teller-1 expired at 1970",
            id="expired-token",
        ),
    ],
)
def test_send_refuses_what_workers_could_only_deny(args: tuple[str, ...], pattern: str) -> None:
    assert_user_error(cli("send", *args, "-t", "topologies.orders", "-b", DEAD_BROKER), pattern)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        pytest.param(("orders.Deposit", "{bad", "--token", TOKEN), r"DATA: invalid JSON",
                     id="bad-json"),
        pytest.param(("orders.Deposit", DEPOSIT, "--token", TOKEN, "--timeout", "0"),
                     r"--timeout takes seconds, > 0", id="timeout"),
        pytest.param(("orders.Deposit", DEPOSIT), r"signed tokens only: pass --token .* or --force",
                     id="no-token"),
        pytest.param(("orders.Deposit", DEPOSIT, "--token", TOKEN),
                     r"cannot ask on kafka://127\.0\.0\.1:1", id="no-broker"),
    ],
)  # fmt: skip
def test_ask_says_what_is_wrong_in_one_line(args: tuple[str, ...], pattern: str) -> None:
    assert_user_error(cli("ask", *args, "-t", "topologies.orders", "-b", DEAD_BROKER), pattern)


def test_force_sends_it_anyway() -> None:
    result = cli("send", "orders.Deposit", DEPOSIT, "--force", "-t", "topologies.orders",
                 "-b", DEAD_BROKER)
    line = assert_user_error(result, r"cannot send to kafka://127\.0\.0\.1:1")  # it got that far
    assert line.count("KafkaConnectionError") <= 1  # the cause, named once


def test_caps_secret_writes_a_private_secret_and_rotates(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = cli("caps", "secret", "--keys", str(keys))
    assert first.returncode == 0, first.stderr
    secret = keys / "worker.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    old = secret.read_text()
    again = cli("caps", "secret", "--keys", str(keys))
    assert_user_error(again, r"worker\.secret exists \(pass --rotate")
    rotated = cli("caps", "secret", "--keys", str(keys), "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert (keys / "worker.secret.previous").read_text() == old
    assert secret.read_text() != old
    store = KeyStore(keys)
    assert len(store.secrets()) == 2  # the new one seals; both verify


def test_worker_keys_hold_public_keys_and_the_secret_never_a_private_key(
    tmp_path: Path,
) -> None:
    keys, dest = tmp_path / "keys", tmp_path / "worker-keys"
    store = KeyStore(keys)
    store.generate("issuer")
    assert_user_error(cli("caps", "worker-keys", str(dest), "--keys", str(keys)),
              r"no worker secret in .*caps secret")
    store.write_secret()
    result = cli("caps", "worker-keys", str(dest), "--keys", str(keys))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["issuer.pub", "worker.secret"]
    assert (dest / "worker.secret").stat().st_mode & 0o777 == 0o600
    assert KeyStore(dest).secrets() == store.secrets()


# -- tail, set-aside, replay: mistakes said in one line ----------------------------------

OPERATE_ERRORS = {
    "unknown topic": (
        ("tail", "topologies.orders", "nosuch", "-b", DEAD_BROKER),
        r"topology orders has no topic 'nosuch'; its topics: accounts, ledger, "
        r"accounts\.changelog, audit, dead-letters, denied, drops, late, members, replies",
    ),
    "bad start": (
        ("tail", "topologies.orders", "accounts", "--from", "yesterday", "-b", DEAD_BROKER),
        r"time 'yesterday': expected an ISO time .* or an age \(15m, 2h\)",
    ),
    "memory broker": (
        ("tail", "topologies.orders", "accounts", "-b", "memory://"),
        r"memory:// lives inside one process, so there is nothing to read",
    ),
    "bad offset range": (
        ("replay", "topologies.orders", "--offsets", "9-2", "-b", DEAD_BROKER),
        r"--offsets '9-2': expected FIRST-LAST .* with FIRST <= LAST",
    ),
    "unknown set-aside topic": (
        ("replay", "topologies.orders", "--from", "graveyard", "-b", DEAD_BROKER),
        r"--from 'graveyard': one of dead-letters, denied, late, drops",
    ),
    "summary of an unknown topic": (
        ("set-aside", "topologies.orders", "--topic", "lost", "-b", DEAD_BROKER),
        r"--topic 'lost': one of dead-letters, denied, late, drops",
    ),
    "unreadable token": (
        ("replay", "topologies.orders", "--token", "not-a-token", "-b", DEAD_BROKER),
        r"--token: token is not 'payload\.signature'",
    ),
    "a start that is no offset and no time": (
        ("tail", "topologies.orders", "accounts", "--from", "\u00b2", "-b", DEAD_BROKER),
        r"time '\u00b2': expected an ISO time",
    ),
    "a time before 1970": (
        ("tail", "topologies.orders", "accounts", "--from", "1900-01-01", "-b", DEAD_BROKER),
        r"time '1900-01-01' is before 1970",
    ),
    "a token vouching for everything": (
        ("replay", "topologies.orders", "--from", "denied", "--token", TOKEN, "-b", DEAD_BROKER),
        r"--token vouches for what is replayed, .* choose the records with --offsets",
    ),
    "unreachable broker": (
        ("set-aside", "topologies.orders", "-b", DEAD_BROKER),
        r"kafka://127\.0\.0\.1:1: ",
    ),
    "unknown kafka client": (
        ("set-aside", "topologies.orders", "-b", f"{DEAD_BROKER}?client=bogus"),
        r"client=bogus: use one of aiokafka, librdkafka",
    ),
}


ACTORS_MODULE = """\
from pydantic import BaseModel
from packetflow import Context, Intent, Topology
from packetflow.actors import actor

topology = Topology("shop")

class Add(Intent, type_name="shop.Add", key="cart", requires=["shop:cart/{cart}"]):
    cart: str

@actor(topology, Add, state=0, topic="carts")
def cart(message, ctx, count):
    return count + 1, None
"""


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("actors", "list", "topologies.orders", "-b", DEAD_BROKER),
         r"topology orders declares no actors"),
        (("actors", "list", "{module}", "--type", "till", "-b", DEAD_BROKER),
         r"topology shop has no actor type 'till' \(actor types: cart\)"),
        (("actors", "show", "{module}", "cart", "c1", "-b", "memory://"),
         r"memory:// lives inside one process"),
        (("actors", "start", "{module}", "till", "c1", "-b", DEAD_BROKER),
         r"has no actor type 'till'"),
        (("actors", "start", "{module}", "cart", "c1", "--token", "junk", "-b", DEAD_BROKER),
         r"token: token is not 'payload\.signature'"),
    ],
)  # fmt: skip
def test_actor_commands_say_what_is_wrong_in_one_line(
    tmp_path: Path, args: tuple[str, ...], pattern: str
) -> None:
    module = tmp_path / "shop_actors.py"
    module.write_text(ACTORS_MODULE)
    assert_user_error(cli(*(a.format(module=module) for a in args)), pattern)


@pytest.mark.parametrize(("args", "pattern"), OPERATE_ERRORS.values(), ids=OPERATE_ERRORS.keys())
def test_operating_commands_say_what_is_wrong_in_one_line(
    args: tuple[str, ...], pattern: str
) -> None:
    assert_user_error(cli(*args), pattern)
