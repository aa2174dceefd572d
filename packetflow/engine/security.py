"""The engine side of capability tokens: trusted keys, the per-worker guard, revocations, audit.

Every worker holds a :class:`Guard` for its topology. Before any reactor runs, the guard
decides whether the record's ``pf-token`` (or, only where the topology opted in, its plain
``pf-capabilities``) covers what the intent requires:

- the token's chain is verified once per distinct token (signatures with the trusted public
  keys by key id, and attenuation with the topology's capability hierarchy) and the result is
  cached by the raw header bytes, so the per-record cost is a dictionary lookup;
- then, per record: valid in time (``nbf <= now < exp`` on the worker's clock), not revoked
  (no token id of the chain, and no holder of the chain since the token was issued, is on
  the revocations topic), and every required capability implied by a granted one.

The principal a reactor sees is the verified holder of the token (``principal-mismatch``
when the context names someone else). Internal intents are authorised by a worker's seal
instead (``packetflow.engine.seal``); the guard holds the worker secrets for both sides.

Revocations live on the compacted topic ``<topology>.revocations`` (key ``token:<id>`` or
``holder:<name>``); every worker follows it from the beginning with a group-less consumer.
The audit topic ``<topology>.audit`` records issues, delegations, revocations and denials.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from packetflow.core.capability import Capability, CapabilityHierarchy
from packetflow.core.context import Context
from packetflow.core.tokens import (
    EXPIRED,
    NOT_YET_VALID,
    REVOKED,
    KeyPair,
    PublicKeyLike,
    TokenClaims,
    TokenError,
    VerifiedToken,
    check_key_id,
    decode_token,
    load_public_key,
    public_keys,
    verify_token,
)
from packetflow.engine.clock import Clock
from packetflow.engine.codec import TOKEN_HEADER
from packetflow.engine.paths import packetflow_home
from packetflow.engine.seal import (
    PREVIOUS_SECRET_FILE,
    PROCESS_SECRET,
    SECRET_FILE,
    Sealer,
    SealError,
    new_secret,
    parse_secret,
)
from packetflow.engine.transport import Record

if TYPE_CHECKING:
    from packetflow.engine.topology import Topology

log = logging.getLogger("packetflow.security")

__all__ = ["TOKEN_HEADER", "Denial", "Guard", "KeyStore", "Security"]

INSUFFICIENT = "insufficient"
PRINCIPAL_MISMATCH = "principal-mismatch"
UNSIGNED_INTERNAL = "unsigned-internal"
BAD_REPLY_TO = "bad-reply-to"
_CACHE_LIMIT = 10_000


# -- keys on disk ------------------------------------------------------------------------


def default_keys_dir() -> Path:
    """``$PACKETFLOW_KEYS``, else ``$PACKETFLOW_HOME/keys``, else ``~/.cache/packetflow/keys``."""
    explicit = os.environ.get("PACKETFLOW_KEYS")
    if explicit:
        return Path(explicit).expanduser()
    return packetflow_home() / "keys"


class KeyStore:
    """A directory of keys: ``<kid>.key`` (PEM private, mode 0600) and ``<kid>.pub`` (PEM).

    Workers trust every ``*.pub`` in it; ``current`` names the key that signs new tokens
    (the newest generated), older keys stay to verify tokens already issued until removed.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_keys_dir()

    def generate(self, kid: str | None = None) -> KeyPair:
        """A new key pair, written to the directory and made current."""
        pair = KeyPair.generate(kid)
        self.add(pair)
        return pair

    def add(self, pair: KeyPair, *, current: bool = True) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = self.path / f"{pair.kid}.key"
        if private.exists() or (self.path / f"{pair.kid}.pub").exists():
            raise FileExistsError(f"key {pair.kid!r} already exists in {self.path}")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pair.private_pem())
        (self.path / f"{pair.kid}.pub").write_bytes(pair.public_pem())
        if current:
            (self.path / "current").write_text(pair.kid + "\n")

    def trust(self, kid: str, public: PublicKeyLike) -> None:
        """Add a public key only (a worker machine that verifies but never issues)."""
        from packetflow.core.tokens import public_pem

        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.path / f"{check_key_id(kid)}.pub").write_bytes(public_pem(load_public_key(public)))

    def current_kid(self) -> str | None:
        marker = self.path / "current"
        if marker.exists():
            kid = marker.read_text().strip()
            if (self.path / f"{kid}.key").exists():
                return kid
        kids = sorted(p.stem for p in self.path.glob("*.key"))
        return kids[0] if len(kids) == 1 else None

    def load(self, kid: str | None = None) -> KeyPair:
        """The private key ``kid`` (default: the current one)."""
        kid = kid or self.current_kid()
        if kid is None:
            if not any(self.path.glob("*.key")):
                raise LookupError(
                    f"no signing key in {self.path}: run 'packetflow caps keygen' first"
                )
            raise LookupError(f"several keys in {self.path} and none is current: pass --kid")
        path = self.path / f"{check_key_id(kid)}.key"
        if not path.exists():
            raise LookupError(f"no private key {kid!r} in {self.path}")
        return KeyPair.from_pem(path.read_bytes(), kid)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every trusted public key, by key id (unreadable files are skipped with a warning)."""
        out: dict[str, Ed25519PublicKey] = {}
        if not self.path.is_dir():
            return out
        for pub in sorted(self.path.glob("*.pub")):
            try:
                out[check_key_id(pub.stem)] = load_public_key(pub.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning("ignoring key file %s: %s", pub, exc)
        return out

    def kids(self) -> list[str]:
        return sorted(p.stem for p in self.path.glob("*.pub")) if self.path.is_dir() else []

    # -- the worker secret (seals internal intents; see engine.seal) ------------------------

    @property
    def secret_path(self) -> Path:
        return self.path / SECRET_FILE

    def write_secret(self, *, rotate: bool = False) -> Path:
        """Create ``worker.secret`` (0600). ``rotate`` keeps the old one as
        ``worker.secret.previous``, which still verifies while workers are updated."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        current = self.secret_path
        if current.exists():
            if not rotate:
                raise FileExistsError(f"{current} exists (pass --rotate to replace it)")
            os.replace(current, self.path / PREVIOUS_SECRET_FILE)
        fd = os.open(current, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_secret() + "\n")
        return current

    def secrets(self) -> list[bytes]:
        """The worker secrets in the directory: the current one first, then the previous."""
        out = []
        for name in (SECRET_FILE, PREVIOUS_SECRET_FILE):
            path = self.path / name
            if path.is_file():
                try:
                    out.append(parse_secret(path.read_text()))
                except (OSError, SealError) as exc:
                    raise SealError(f"{path}: {exc}") from None
        return out


# -- a topology's security settings ------------------------------------------------------


@dataclass
class Security:
    """How a topology's workers authorise intents.

    ``trusted_keys``: the public keys that may sign tokens, ``{kid: key}`` (an Ed25519 public
    key, a PEM or a :class:`KeyPair`) or key pairs; None (the default) trusts every ``*.pub``
    in ``keys_dir`` (default :func:`default_keys_dir`), rescanned every ``key_refresh``
    seconds so keys can be rotated without a restart.
    ``allow_unsigned``: also accept plain ``pf-capabilities`` headers, which anyone who can
    produce to a topic can write (tests and embedded demos only; workers warn at start).
    ``audit_allowed``: also write every allowed intent to the audit topic.
    ``worker_secret``: the secret (64 hex characters, or bytes) that seals internal intents;
    None (the default) reads ``worker.secret`` (and ``worker.secret.previous``) from
    ``keys_dir``; workers on ``memory://`` without one share a per-process secret.
    """

    trusted_keys: Mapping[str, PublicKeyLike] | Iterable[KeyPair] | None = None
    keys_dir: str | Path | None = None
    allow_unsigned: bool = False
    audit_allowed: bool = False
    key_refresh: float = 10.0
    worker_secret: str | bytes | None = None

    @property
    def keys_from_dir(self) -> bool:
        return self.trusted_keys is None

    def resolve_keys(self) -> dict[str, Ed25519PublicKey]:
        if self.trusted_keys is None:
            return KeyStore(self.keys_dir).public_keys()
        return public_keys(self.trusted_keys)

    def sealer(self, *, in_process: bool = False) -> Sealer | None:
        """Who seals and verifies internal intents here (None: no secret anywhere)."""
        if self.worker_secret is not None:
            raw = self.worker_secret
            return Sealer([parse_secret(raw) if isinstance(raw, str) else raw])
        secrets = KeyStore(self.keys_dir).secrets()
        if secrets:
            return Sealer(secrets)
        return Sealer([PROCESS_SECRET]) if in_process else None

    def trusting(self, keys: Mapping[str, Ed25519PublicKey]) -> Security:
        """A copy that trusts exactly its explicit keys (none when dir-based) plus ``keys``."""
        explicit = {} if self.trusted_keys is None else public_keys(self.trusted_keys)
        return replace(self, trusted_keys={**explicit, **keys})


# -- the guard ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a record was refused: ``reason`` (the ``pf-reason``), a message, what was missing."""

    reason: str
    message: str
    missing: tuple[str, ...] = ()
    claims: TokenClaims | None = None


class _Entry:
    """What the guard knows about one distinct ``pf-token`` value."""

    __slots__ = (
        "denial",
        "expires",
        "gen",
        "grants",
        "holder",
        "missing",
        "not_before",
        "revoked",
        "token",
    )

    def __init__(self, token: VerifiedToken | None, denial: Denial | None) -> None:
        self.token = token
        self.denial = denial
        self.holder: str | None = token.holder if token else None
        self.grants: tuple[Capability, ...] = token.grants if token else ()
        self.not_before = token.not_before if token else 0
        self.expires = token.expires if token else 0
        self.gen = -1
        self.revoked: Denial | None = None
        self.missing: dict[tuple[tuple[str, str], ...], tuple[str, ...]] = {}


@dataclass
class Revocation:
    kind: str  # "token" or "holder"
    subject: str
    at: float
    by: str | None = None
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Guard:
    """One worker's authorisation of records for one topology (see the module docstring)."""

    def __init__(
        self,
        topology: Topology,
        security: Security,
        clock: Clock,
        sealer: Sealer | None = None,
    ) -> None:
        self.topology = topology
        self.security = security
        self.sealer = sealer
        self.hierarchy: CapabilityHierarchy = topology.hierarchy
        self.clock = clock
        self.allow_unsigned = security.allow_unsigned
        self.audit_allowed = security.audit_allowed
        self.keys: dict[str, Ed25519PublicKey] = security.resolve_keys()
        self._keys_checked = time.monotonic()
        self._entries: dict[bytes, _Entry] = {}
        self._last_raw: bytes | None = None
        self._last_entry: _Entry | None = None
        self._unsigned: dict[tuple[bytes, tuple[tuple[str, str], ...]], tuple[str, ...]] = {}
        self.revoked_tokens: dict[str, Revocation] = {}
        self.revoked_holders: dict[str, Revocation] = {}
        self._gen = 0  # bumped by every revocation change

    # -- the per-record check (hot path) ----------------------------------------------------

    def authorize(
        self,
        required: tuple[tuple[str, str], ...],
        token_raw: bytes | None,
        caps_raw: bytes,
        context: Context,
        intent_type: str,
    ) -> Denial | None:
        """None when allowed (``context.capabilities`` then holds the granted ones)."""
        if token_raw is None:
            return self._authorize_unsigned(required, caps_raw, context, intent_type)
        if token_raw == self._last_raw:
            entry = self._last_entry
            assert entry is not None
        else:
            entry = self._entries.get(token_raw)
            if entry is None:
                entry = self._verify(token_raw)
            self._last_raw, self._last_entry = token_raw, entry
        if entry.denial is not None:
            return entry.denial
        lapsed = self._lapsed(entry)
        if lapsed is not None:
            return lapsed
        principal = context.principal
        if principal != entry.holder:
            if principal is not None:
                return self._impostor(entry, principal, intent_type)
            context.__dict__["principal"] = entry.holder  # the principal is the token's
        missing = entry.missing.get(required)
        if missing is None:
            missing = self._missing(entry.grants, required)
            if len(entry.missing) > 1000:
                entry.missing.clear()
            entry.missing[required] = missing
        if missing:
            claims = entry.token.claims if entry.token else None
            who = context.principal or (claims.holder if claims else "anonymous")
            return Denial(INSUFFICIENT, _lacks(who, missing, intent_type), missing, claims)
        context.__dict__["capabilities"] = entry.grants
        return None

    def _impostor(self, entry: _Entry, principal: str, intent_type: str) -> Denial:
        claims = entry.token.claims if entry.token else None
        token_id = claims.token_id if claims else "?"
        return Denial(
            PRINCIPAL_MISMATCH,
            f"the context names {principal!r} but token {token_id} is held by "
            f"{entry.holder!r} ({intent_type}): the principal is the token's holder",
            (),
            claims,
        )

    def check_seal(
        self,
        topic: str,
        key: bytes | None,
        type_name: str,
        value: bytes,
        context_raw: bytes | None,
        token_raw: bytes | None,
        mac_raw: bytes | None,
    ) -> Denial | None:
        """None when an internal intent carries a valid worker seal (see engine.seal)."""
        sealer = self.sealer
        why = (
            "this worker holds no worker secret"
            if sealer is None
            else sealer.verify(
                mac_raw, topic, key, type_name.encode(), value, context_raw, token_raw
            )
        )
        if why is None:
            return None
        return Denial(
            UNSIGNED_INTERNAL,
            f"{type_name} is internal (only workers emit it) but {why}",
        )

    def still_valid(self, token_raw: bytes | None) -> Denial | None:
        """Check again, as an intent leaves a backpressure buffer, that the token that
        authorised it is still in time and unrevoked (None: still valid)."""
        if token_raw is None:
            return None
        entry = self._entries.get(token_raw)
        if entry is None or entry.token is None:
            return None  # not verified here: it was not what authorised the intent
        return self._lapsed(entry)

    def _lapsed(self, entry: _Entry) -> Denial | None:
        """Why a verified token no longer holds now (out of its time, or revoked), or None."""
        now = self.clock.time()
        if not entry.not_before <= now < entry.expires:
            return self._time_denial(entry, now)
        if entry.gen != self._gen:
            entry.revoked = self._revocation(entry)
            entry.gen = self._gen
        return entry.revoked

    def _authorize_unsigned(
        self,
        required: tuple[tuple[str, str], ...],
        caps_raw: bytes,
        context: Context,
        intent_type: str,
    ) -> Denial | None:
        who = context.principal or "anonymous"
        if not self.allow_unsigned:
            everything = tuple(f"{op}:{res}" for op, res in required)
            note = (
                " (plain capabilities are not accepted here: send a signed token)"
                if context.capabilities or caps_raw
                else " (no token)"
            )
            return Denial(INSUFFICIENT, _lacks(who, everything, intent_type) + note, everything)
        if not caps_raw and context.capabilities:  # capabilities came inside pf-context
            caps_raw = orjson.dumps([str(c) for c in context.capabilities])
        key = (caps_raw, required)
        missing = self._unsigned.get(key)
        if missing is None:
            missing = self._missing(context.capabilities, required)
            if len(self._unsigned) > _CACHE_LIMIT:
                self._unsigned.clear()
            self._unsigned[key] = missing
        if missing:
            return Denial(INSUFFICIENT, _lacks(who, missing, intent_type), missing)
        return None

    def _missing(
        self, held: tuple[Capability, ...], required: tuple[tuple[str, str], ...]
    ) -> tuple[str, ...]:
        allows = self.hierarchy.allows
        return tuple(f"{op}:{res}" for op, res in required if not allows(held, op, res))

    def _verify(self, token_raw: bytes) -> _Entry:
        try:
            entry = _Entry(verify_token(bytes(token_raw), self.keys, self.hierarchy), None)
        except TokenError as exc:
            entry = _Entry(None, Denial(exc.reason, exc.message, (), exc.claims))
        if len(self._entries) > _CACHE_LIMIT:
            self._entries.clear()
        self._entries[bytes(token_raw)] = entry
        return entry

    def _time_denial(self, entry: _Entry, now: float) -> Denial:
        assert entry.token is not None
        claims = entry.token.claims
        if now < entry.not_before:
            when = _iso(entry.not_before)
            return Denial(
                NOT_YET_VALID,
                f"token {claims.token_id} of {claims.holder} is not valid before {when}",
                (),
                claims,
            )
        return Denial(
            EXPIRED,
            f"token {claims.token_id} of {claims.holder} expired at {_iso(entry.expires)}",
            (),
            claims,
        )

    def _revocation(self, entry: _Entry) -> Denial | None:
        if not (self.revoked_tokens or self.revoked_holders) or entry.token is None:
            return None
        for link in entry.token.chain:
            rev = self.revoked_tokens.get(link.token_id)
            if rev is None:
                rev = self.revoked_holders.get(link.holder)
                if rev is not None and link.issued_at > rev.at:
                    rev = None  # issued after the holder was revoked
            if rev is not None:
                what = f"token {link.token_id}" if rev.kind == "token" else f"holder {link.holder}"
                by = f" by {rev.by}" if rev.by else ""
                why = f": {rev.reason}" if rev.reason else ""
                return Denial(
                    REVOKED,
                    f"{what} was revoked{by} at {_iso(rev.at)}{why}",
                    (),
                    entry.token.claims,
                )
        return None

    def last_verified(self, context: Context) -> VerifiedToken | None:
        """The token :meth:`authorize` just accepted for ``context`` (None without one)."""
        entry = self._last_entry
        return entry.token if context.token is not None and entry is not None else None

    # -- keys ------------------------------------------------------------------------------

    def set_keys(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Trust exactly ``keys`` from now on (verification results are recomputed)."""
        self.keys = dict(keys)
        self._entries.clear()
        self._last_raw = self._last_entry = None

    def refresh_keys(self, force: bool = False) -> bool:
        """Rescan the keys directory when due; True when the trusted keys changed."""
        if not self.security.keys_from_dir:
            return False
        now = time.monotonic()
        if not force and now - self._keys_checked < self.security.key_refresh:
            return False
        self._keys_checked = now
        keys = self.security.resolve_keys()
        if _raw(keys) == _raw(self.keys):
            return False
        added, removed = sorted(set(keys) - set(self.keys)), sorted(set(self.keys) - set(keys))
        log.info("trusted keys changed: added %s, removed %s", added or "-", removed or "-")
        self.set_keys(keys)
        return True

    # -- revocations -----------------------------------------------------------------------

    def apply(self, record: Record) -> Revocation | None:
        """Take one record of the revocations topic into account (a tombstone lifts one)."""
        try:
            kind, subject = parse_revocation_key(record.key)
        except ValueError as exc:
            log.warning("ignoring revocation record at offset %s: %s", record.offset, exc)
            return None
        table = self.revoked_tokens if kind == "token" else self.revoked_holders
        if record.value is None:
            if table.pop(subject, None) is not None:
                self._gen += 1
            return None
        try:
            data = orjson.loads(record.value)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            at = data.get("at", record.timestamp / 1000)
            if not isinstance(at, (int, float)) or isinstance(at, bool):
                raise ValueError("'at' is not a number")
        except ValueError as exc:
            log.warning("revocation of %s %s: bad value (%s); revoking anyway", kind, subject, exc)
            data, at = {}, record.timestamp / 1000
        rev = Revocation(
            kind,
            subject,
            float(at),
            _str_or_none(data.get("by")),
            str(data.get("reason") or ""),
            {k: v for k, v in data.items() if k not in ("kind", "at", "by", "reason")},
        )
        table[subject] = rev
        self._gen += 1
        return rev


def _raw(keys: Mapping[str, Ed25519PublicKey]) -> dict[str, bytes]:
    from cryptography.hazmat.primitives import serialization

    return {
        k: v.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for k, v in keys.items()
    }


def _lacks(who: str, missing: tuple[str, ...], intent_type: str) -> str:
    return f"{who} lacks {', '.join(missing)} for {intent_type}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


# -- revocation and audit records --------------------------------------------------------


def revocation_key(*, token_id: str | None = None, holder: str | None = None) -> bytes:
    if (token_id is None) == (holder is None):
        raise ValueError("revoke either a token id or a holder")
    if token_id is not None:
        return f"token:{token_id}".encode()
    return f"holder:{holder}".encode()


def parse_revocation_key(key: bytes | None) -> tuple[str, str]:
    if not key:
        raise ValueError("revocation record has no key")
    kind, sep, subject = key.decode("utf-8", errors="replace").partition(":")
    if not sep or not subject or kind not in ("token", "holder"):
        raise ValueError(f"revocation key {key!r} is not 'token:<id>' or 'holder:<name>'")
    return kind, subject


def revocation_record(
    *,
    token_id: str | None = None,
    holder: str | None = None,
    by: str | None = None,
    reason: str = "",
    at: float | None = None,
) -> tuple[bytes, bytes]:
    """The key and value of a record on the revocations topic."""
    key = revocation_key(token_id=token_id, holder=holder)
    value = {
        "kind": "token" if token_id is not None else "holder",
        "token_id" if token_id is not None else "holder": token_id or holder,
        "by": by,
        "at": time.time() if at is None else at,
        "reason": reason,
    }
    return key, orjson.dumps(value)


def audit_record(event: str, at: float, **fields: Any) -> bytes:
    """One audit topic record: ``{"event": ..., "at": epoch, "time": ISO, ...}``."""
    body = {"event": event, "at": at, "time": _iso(at)}
    body.update({k: v for k, v in fields.items() if v is not None})
    return orjson.dumps(body)


def token_audit_fields(token: str) -> dict[str, Any]:
    """What the audit topic says about an issued or delegated token."""
    claims = decode_token(token)
    fields: dict[str, Any] = {
        "token_id": claims.token_id,
        "holder": claims.holder,
        "issuer": claims.issuer,
        "key_id": claims.key_id,
        "grants": [str(g) for g in claims.grants],
        "not_before": claims.not_before,
        "expires": claims.expires,
    }
    if claims.parent is not None:
        fields["parent_token_id"] = decode_token(claims.parent).token_id
    return fields
