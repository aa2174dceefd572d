"""``packetflow caps``: signing keys, capability tokens, delegation, inspection and revocation.

Keys live in ``$PACKETFLOW_KEYS`` (default ``$PACKETFLOW_HOME/keys``, i.e.
``~/.cache/packetflow/keys``): ``<kid>.key`` (private, 0600) signs tokens, ``<kid>.pub`` is what
workers need to verify them, ``worker.secret`` (``caps secret``) seals what workers emit for
each other. ``issue`` prints only the token on stdout, so ``TOKEN=$(packetflow caps issue
...)`` works.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console

from packetflow.cli.errors import broker_url, load, shared_broker_url
from packetflow.cli.options import BrokerOpt, KeysOpt, TopologyOpt
from packetflow.core.capability import Capability, CapabilityHierarchy
from packetflow.core.tokens import (
    TokenClaims,
    TokenError,
    decode_chain,
    delegate_token,
    issue_token,
    parse_ttl,
    verify_token,
)
from packetflow.engine.client import Client
from packetflow.engine.security import KeyStore, default_keys_dir
from packetflow.engine.topology import Topology
from packetflow.engine.transport import BrokerURL

app = typer.Typer(
    name="caps",
    help="Signing keys, the worker secret and capability tokens: keygen, secret, issue, "
    "delegate, inspect, revoke.",
    no_args_is_help=True,
    add_completion=False,
)

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)

KidOpt = Annotated[
    str | None, typer.Option("--kid", help="Key id to sign with (default: the current key)")
]
GrantOpt = Annotated[
    list[str],
    typer.Option("--grant", "-g", help="Capability granted, op:resource (repeatable)"),
]
TtlOpt = Annotated[str, typer.Option("--ttl", help="Lifetime: 90, 30s, 10m, 1h, 7d")]


def _fail(message: str) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(2)


def _store(keys: Path | None) -> KeyStore:
    return KeyStore(keys or default_keys_dir())


def _topology(spec: str | None) -> Topology | None:
    return None if spec is None else load(spec)


def _kafka_url(value: str | None, *, required: bool) -> str | None:
    """The broker to audit to or revoke on: required, or None where it is memory://."""
    if required:
        return shared_broker_url(value, "no worker would see this")
    url = broker_url(value)
    return url if BrokerURL.parse(url).scheme == "kafka" else None


def _grants(grant: list[str]) -> list[Capability]:
    if not grant:
        _fail("grant at least one capability with --grant op:resource")
    try:
        return [Capability.parse(g) for g in grant]
    except ValueError as exc:
        _fail(str(exc).splitlines()[0])


def _ttl(ttl: str) -> int:
    try:
        return parse_ttl(ttl)
    except ValueError as exc:
        _fail(str(exc))


def _token_arg(token: str) -> str:
    text = sys.stdin.read() if token == "-" else token
    return text.strip()


def _audit(topology: Topology | None, url: str | None, token: str, by: str | None) -> None:
    if topology is None or url is None:
        return
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())

    async def record() -> None:
        async with Client(url, topology) as client:
            await client.record_issued(token, by=by)

    try:
        asyncio.run(record())
    except Exception as exc:
        _fail(f"cannot write the audit record to {url}: {type(exc).__name__}: {exc}")
    _err.print(f"audited on {topology.physical(topology.audit_topic)}")


# -- commands ----------------------------------------------------------------------------


@app.command()
def keygen(
    kid: Annotated[str | None, typer.Option("--kid", help="Key id (default: from the key)")] = None,
    keys: KeysOpt = None,
) -> None:
    """Generate an Ed25519 signing key; it becomes the current key that signs new tokens."""
    store = _store(keys)
    try:
        pair = store.generate(kid)
    except (ValueError, FileExistsError, OSError) as exc:
        _fail(str(exc))
    _out.print(f"generated key {pair.kid}")
    _out.print(f"  private: {store.path / (pair.kid + '.key')}  (keep secret: signs tokens)")
    _out.print(f"  public:  {store.path / (pair.kid + '.pub')}  (copy to every worker's keys dir)")


@app.command()
def secret(
    keys: KeysOpt = None,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="Replace an existing secret; the old one is kept as worker.secret.previous "
            "and still verifies until removed",
        ),
    ] = False,
) -> None:
    """Create the worker secret that seals internal intents (every worker needs the same)."""
    store = _store(keys)
    try:
        path = store.write_secret(rotate=rotate)
    except (FileExistsError, OSError) as exc:
        _fail(str(exc))
    _out.print(f"wrote worker secret {path}  (0600)")
    _out.print(
        "  copy it to the keys directory of every worker of your topologies, as you would a "
        "private key; never to token issuers or clients"
    )
    if rotate:
        _out.print(
            f"  the previous secret is {store.path / 'worker.secret.previous'}: remove it once "
            "every worker runs with the new one"
        )


@app.command("worker-keys")
def worker_keys(
    dest: Annotated[Path, typer.Argument(help="Directory to give to workers (created)")],
    keys: KeysOpt = None,
) -> None:
    """Copy what workers need, and only that: the public keys and the worker secret.

    Token-signing private keys (*.key) stay where tokens are issued; mount DEST into
    worker machines or containers (docker-compose.yml mounts ./worker-keys)."""
    store = _store(keys)
    pubs = sorted(store.path.glob("*.pub")) if store.path.is_dir() else []
    secrets = [p for p in (store.secret_path, store.path / "worker.secret.previous") if p.is_file()]
    if not pubs:
        _fail(f"no public keys in {store.path}: run 'packetflow caps keygen' first")
    if not secrets:
        _fail(f"no worker secret in {store.path}: run 'packetflow caps secret' first")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in pubs:
        (dest / path.name).write_bytes(path.read_bytes())
    for path in secrets:
        target = dest / path.name
        target.write_bytes(path.read_bytes())
        target.chmod(0o600)
    _out.print(
        f"copied {len(pubs)} public key(s) and the worker secret to {dest} "
        "(no private key: workers verify tokens, they never issue them)"
    )


@app.command("keys")
def list_keys(keys: KeysOpt = None) -> None:
    """List the keys in the keys directory (workers trust every *.pub there)."""
    store = _store(keys)
    current = store.current_kid()
    kids = store.kids()
    if store.secret_path.exists():
        _out.print(f"worker secret: {store.secret_path}")
    if not kids:
        _out.print(f"no keys in {store.path}: run 'packetflow caps keygen'")
        return
    for kid in kids:
        private = (store.path / f"{kid}.key").exists()
        marks = ", ".join(m for m, on in (("current", kid == current), ("can sign", private)) if on)
        _out.print(f"{kid}" + (f"  ({marks})" if marks else ""))


@app.command()
def issue(
    holder: Annotated[str, typer.Option("--holder", help="Who the token is for")],
    grant: GrantOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    ttl: TtlOpt = "1h",
    kid: KidOpt = None,
    issuer: Annotated[str, typer.Option("--issuer", help="Issuer name in the token")] = (
        "packetflow"
    ),
    keys: KeysOpt = None,
    topology_spec: TopologyOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Issue a token granting --grant capabilities to --holder; prints the token.

    With --topology and a kafka:// broker, the issue is also recorded on the audit topic.
    """
    caps = _grants(grant)
    seconds = _ttl(ttl)
    topology = _topology(topology_spec)
    url = _kafka_url(broker, required=False) if topology is not None else None
    try:
        key = _store(keys).load(kid)
        token = issue_token(holder, caps, key=key, ttl=seconds, issuer=issuer)
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    _audit(topology, url, token, issuer)
    print(token)


@app.command()
def delegate(
    token: Annotated[str, typer.Option("--token", help="The parent token ('-' reads stdin)")],
    holder: Annotated[str, typer.Option("--holder", help="Who the new token is for")],
    grant: GrantOpt = [],  # noqa: B006
    ttl: TtlOpt = "1h",
    kid: KidOpt = None,
    keys: KeysOpt = None,
    topology_spec: TopologyOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Delegate a subset of a token's grants to another holder; prints the new token.

    The new token never outlives its parent. With --topology, grants are checked against the
    topology's capability hierarchy (a role held implies its operations) and the delegation is
    audited when a kafka:// broker is set.
    """
    parent = _token_arg(token)
    caps = _grants(grant)
    seconds = _ttl(ttl)
    topology = _topology(topology_spec)
    hierarchy = topology.hierarchy if topology is not None else None
    url = _kafka_url(broker, required=False) if topology is not None else None
    try:
        key = _store(keys).load(kid)
        child = delegate_token(parent, holder, caps, key=key, ttl=seconds, hierarchy=hierarchy)
    except TokenError as exc:
        _fail(f"{exc.reason}: {exc.message}")
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    _audit(topology, url, child, None)
    print(child)


@app.command()
def inspect(
    token: Annotated[str, typer.Argument(help="The token ('-' reads stdin)")],
    keys: KeysOpt = None,
    topology_spec: TopologyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Decode a token and its delegation chain; check signatures, attenuation and time.

    Exits 0 when the token is valid now with the keys directory's keys, 1 when not.
    Revocation is not checked here (it lives on the topology's revocations topic).
    """
    text = _token_arg(token)
    try:
        chain = decode_chain(text)
    except TokenError as exc:
        _fail(f"{exc.reason}: {exc.message}")
    topology = _topology(topology_spec)
    hierarchy = topology.hierarchy if topology is not None else CapabilityHierarchy()
    now = time.time()
    verdict, detail = "valid", ""
    try:
        verified = verify_token(text, _store(keys).public_keys(), hierarchy)
    except TokenError as exc:
        verdict, detail = exc.reason, exc.message
        if verdict == "delegation-widened" and topology is None:
            detail += " (without -t MODULE, roles imply nothing: operations must match exactly)"
    else:
        if now < verified.not_before:
            verdict, detail = "not-yet-valid", f"valid from {_iso(verified.not_before)}"
        elif now >= verified.expires:
            verdict, detail = "expired", f"expired at {_iso(verified.expires)}"
    if as_json:
        print(
            orjson.dumps(
                {
                    "verdict": verdict,
                    "detail": detail or None,
                    "chain": [_claims_dict(c) for c in chain],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    else:
        for depth, claims in enumerate(chain):
            label = "token" if depth == 0 else f"parent {depth}"
            _out.print(f"{label} {claims.token_id}", soft_wrap=True)
            _out.print(f"  holder   {claims.holder}", soft_wrap=True)
            _out.print(f"  issuer   {claims.issuer} (key {claims.key_id})", soft_wrap=True)
            _out.print(f"  grants   {', '.join(str(g) for g in claims.grants)}", soft_wrap=True)
            _out.print(
                f"  valid    {_iso(claims.not_before)} .. {_iso(claims.expires)}"
                f"{_remaining(claims, now)}",
                soft_wrap=True,
            )
            _out.print(f"  issued   {_iso(claims.issued_at)}")
        _out.print(f"verdict: {verdict}" + (f" ({detail})" if detail else ""), soft_wrap=True)
    raise typer.Exit(0 if verdict == "valid" else 1)


@app.command()
def revoke(
    token_id: Annotated[str | None, typer.Option("--token-id", help="Token id to revoke")] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Token to revoke (its id is taken)")
    ] = None,
    holder: Annotated[
        str | None,
        typer.Option("--holder", help="Revoke every token of this holder issued until now"),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the record)")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who revokes")] = None,
    topology_spec: TopologyOpt = None,
    broker: BrokerOpt = None,
) -> None:
    """Revoke a token id or a holder on the topology's revocations topic (all workers follow it)."""
    if token is not None:
        if token_id is not None:
            _fail("give --token or --token-id, not both")
        try:
            token_id = decode_chain(_token_arg(token))[0].token_id
        except TokenError as exc:
            _fail(f"{exc.reason}: {exc.message}")
    if (token_id is None) == (holder is None):
        _fail("revoke exactly one of --token-id (or --token) and --holder")
    if topology_spec is None:
        _fail("name the topology with --topology MODULE (or set PACKETFLOW_TOPOLOGY)")
    topology = _topology(topology_spec)
    assert topology is not None
    url = _kafka_url(broker, required=True)
    assert url is not None
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())

    async def send() -> Any:
        async with Client(url, topology) as client:
            return await client.revoke(token_id=token_id, holder=holder, by=by, reason=reason)

    try:
        delivery = asyncio.run(send())
    except Exception as exc:
        _fail(f"cannot revoke on {url}: {type(exc).__name__}: {exc}")
    what = f"token {token_id}" if token_id is not None else f"holder {holder}"
    _out.print(f"revoked {what} on {delivery.topic} at offset {delivery.offset}")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _remaining(claims: TokenClaims, now: float) -> str:
    if now >= claims.expires:
        return "  (expired)"
    if now < claims.not_before:
        return "  (not yet valid)"
    left = int(claims.expires - now)
    return f"  ({left // 3600}h {left % 3600 // 60}m {left % 60}s left)"


def _claims_dict(claims: TokenClaims) -> dict[str, Any]:
    data = claims.payload()
    data.pop("parent")
    return data
