"""Capability tokens: signed, time-bounded grants of capabilities to a holder, and delegation.

A token is ``base64url(payload).base64url(signature)`` (no padding). The payload is JSON::

    {"v": 1, "jti": "<token id>", "sub": "<holder>", "iss": "<issuer>", "kid": "<key id>",
     "grants": ["withdraw:account/*", ...], "nbf": <epoch s>, "exp": <epoch s>,
     "iat": <epoch s>, "parent": "<the parent token>" | null}

and the signature is Ed25519, by the key ``kid``, over the payload bytes exactly as they
appear (base64url-decoded) in the token. A delegated token carries its whole parent token in
``parent``, so the chain travels with it and every link is verified on its own: each link's
signature, and each child's grants and validity window within its parent's (attenuation).

This module is pure: no I/O, no clock of its own (callers pass ``now``), and no revocation,
which the engine checks against its revocations topic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from packetflow.core.capability import (
    Capability,
    CapabilityHierarchy,
    CapabilityLike,
    as_capability,
)

TOKEN_VERSION = 1
MAX_TOKEN_BYTES = 16 * 1024  # a chain of MAX_CHAIN tokens with a few grants each fits easily
MAX_CHAIN = 8  # a root and at most seven delegations
MAX_GRANTS = 64
DEFAULT_ISSUER = "packetflow"

# Why a token is refused: the ``pf-reason`` of a denied record.
BAD_SIGNATURE = "bad-signature"
UNKNOWN_KEY = "unknown-key"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
REVOKED = "revoked"
DELEGATION_WIDENED = "delegation-widened"
MALFORMED = "malformed-token"

_B64_RE = re.compile(rb"^[A-Za-z0-9_-]+$")
_KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NAME_MAX = 256
_PAYLOAD_KEYS = frozenset(
    {"v", "jti", "sub", "iss", "kid", "grants", "nbf", "exp", "iat", "parent"}
)
_EMPTY_HIERARCHY = CapabilityHierarchy()


class TokenError(ValueError):
    """A token that cannot be used; ``reason`` is one of the reason codes above."""

    def __init__(self, reason: str, message: str, claims: TokenClaims | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.claims = claims  # the (leaf) token's claims when they could be read


# -- keys --------------------------------------------------------------------------------


def key_id_for(public: Ed25519PublicKey) -> str:
    """A stable key id derived from the public key: ``k`` + 12 hex digits of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "k" + hashlib.sha256(raw).hexdigest()[:12]


def check_key_id(kid: str) -> str:
    if not isinstance(kid, str) or not _KID_RE.match(kid):
        raise ValueError(f"invalid key id {kid!r}: 1-64 letters, digits, '.', '_' or '-'")
    return kid


class KeyPair:
    """An Ed25519 signing key and its key id; ``public`` is what workers need to verify."""

    def __init__(self, private: Ed25519PrivateKey, kid: str | None = None) -> None:
        self.private = private
        self.public = private.public_key()
        self.kid = check_key_id(kid) if kid is not None else key_id_for(self.public)

    @classmethod
    def generate(cls, kid: str | None = None) -> KeyPair:
        return cls(Ed25519PrivateKey.generate(), kid)

    @classmethod
    def from_pem(cls, pem: bytes, kid: str | None = None) -> KeyPair:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return cls(key, kid)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return public_pem(self.public)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def __repr__(self) -> str:
        return f"KeyPair(kid={self.kid!r})"


PublicKeyLike = Ed25519PublicKey | KeyPair | bytes | str


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(value: PublicKeyLike) -> Ed25519PublicKey:
    """A public key from a key pair, a PEM (bytes or str) or 32 raw bytes."""
    if isinstance(value, Ed25519PublicKey):
        return value
    if isinstance(value, KeyPair):
        return value.public
    data = value.encode() if isinstance(value, str) else value
    if len(data) == 32:
        return Ed25519PublicKey.from_public_bytes(data)
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def public_keys(
    keys: Mapping[str, PublicKeyLike] | Iterable[KeyPair],
) -> dict[str, Ed25519PublicKey]:
    """``{kid: public key}`` from a mapping of anything :func:`load_public_key` takes, or pairs."""
    if isinstance(keys, Mapping):
        return {check_key_id(k): load_public_key(v) for k, v in keys.items()}
    return {k.kid: k.public for k in keys}


# -- the token model ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """One token's payload."""

    token_id: str
    holder: str
    issuer: str
    key_id: str
    grants: tuple[Capability, ...]
    not_before: int
    expires: int
    issued_at: int
    parent: str | None = None
    version: int = TOKEN_VERSION

    def payload(self) -> dict[str, object]:
        return {
            "v": self.version,
            "jti": self.token_id,
            "sub": self.holder,
            "iss": self.issuer,
            "kid": self.key_id,
            "grants": [str(g) for g in self.grants],
            "nbf": self.not_before,
            "exp": self.expires,
            "iat": self.issued_at,
            "parent": self.parent,
        }


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose every link is signed by a trusted key and attenuates its parent.

    ``chain`` runs from this token (first) to the root token (last). Validity in time and
    revocation are not part of verification: they change while the token does not.
    """

    token: str
    chain: tuple[TokenClaims, ...]
    grants: tuple[Capability, ...] = field(init=False)
    not_before: int = field(init=False)
    expires: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grants", self.chain[0].grants)
        object.__setattr__(self, "not_before", max(c.not_before for c in self.chain))
        object.__setattr__(self, "expires", min(c.expires for c in self.chain))

    @property
    def claims(self) -> TokenClaims:
        return self.chain[0]

    @property
    def token_id(self) -> str:
        return self.chain[0].token_id

    @property
    def holder(self) -> str:
        return self.chain[0].holder

    def valid_at(self, now: float) -> bool:
        return self.not_before <= now < self.expires


def _b64e(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64d(part: bytes, what: str) -> bytes:
    """Strict base64url without padding: only the alphabet, and only the canonical form."""
    if not _B64_RE.match(part):
        raise TokenError(MALFORMED, f"token {what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(MALFORMED, f"token {what} is not base64url") from None
    if _b64e(data) != part:  # other spellings of the same bytes would be other tokens
        raise TokenError(MALFORMED, f"token {what} is not canonical base64url")
    return data


def _as_bytes(token: str | bytes) -> bytes:
    if isinstance(token, bytes):
        return token
    try:
        return token.encode("ascii")
    except UnicodeEncodeError:
        raise TokenError(MALFORMED, "token is not ASCII") from None


def split_token(token: str | bytes) -> tuple[TokenClaims, bytes, bytes]:
    """The claims, the signed payload bytes and the signature of one token (not verified)."""
    raw = _as_bytes(token)
    if len(raw) > MAX_TOKEN_BYTES:
        raise TokenError(MALFORMED, f"token is {len(raw)} bytes, the limit is {MAX_TOKEN_BYTES}")
    head, dot, tail = raw.partition(b".")
    if not dot or not head or not tail:
        raise TokenError(MALFORMED, "token is not 'payload.signature'")
    payload = _b64d(head, "payload")
    signature = _b64d(tail, "signature")
    if len(signature) != 64:
        raise TokenError(MALFORMED, "token signature is not 64 bytes")
    return _claims(payload), payload, signature


def _claims(payload: bytes) -> TokenClaims:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise TokenError(MALFORMED, "token payload is not JSON") from None
    if not isinstance(data, dict):
        raise TokenError(MALFORMED, "token payload is not a JSON object")
    if set(data) != _PAYLOAD_KEYS:
        missing = sorted(_PAYLOAD_KEYS - set(data))
        extra = sorted(set(data) - _PAYLOAD_KEYS)
        raise TokenError(MALFORMED, f"token payload fields: missing {missing}, unexpected {extra}")
    if data["v"] != TOKEN_VERSION or type(data["v"]) is not int:
        raise TokenError(MALFORMED, f"token version {data['v']!r} is not {TOKEN_VERSION}")
    for name in ("jti", "sub", "iss", "kid"):
        value = data[name]
        if not isinstance(value, str) or not value or len(value) > _NAME_MAX:
            raise TokenError(MALFORMED, f"token {name!r} must be a non-empty string")
    for name in ("nbf", "exp", "iat"):
        if type(data[name]) is not int:
            raise TokenError(MALFORMED, f"token {name!r} must be an integer (epoch seconds)")
    grants = data["grants"]
    if (
        not isinstance(grants, list)
        or not 0 < len(grants) <= MAX_GRANTS
        or not all(isinstance(g, str) for g in grants)
    ):
        raise TokenError(MALFORMED, f"token grants must be 1 to {MAX_GRANTS} capability strings")
    try:
        caps = tuple(Capability.parse(g) for g in grants)
    except ValueError as exc:
        raise TokenError(MALFORMED, f"token grant: {str(exc).splitlines()[0]}") from None
    parent = data["parent"]
    if parent is not None and (not isinstance(parent, str) or not parent):
        raise TokenError(MALFORMED, "token parent must be a token string or null")
    return TokenClaims(
        token_id=data["jti"],
        holder=data["sub"],
        issuer=data["iss"],
        key_id=data["kid"],
        grants=caps,
        not_before=data["nbf"],
        expires=data["exp"],
        issued_at=data["iat"],
        parent=parent,
    )


def decode_token(token: str | bytes) -> TokenClaims:
    """The claims of ``token`` without checking its signature (for display and routing)."""
    return split_token(token)[0]


def decode_chain(token: str | bytes) -> list[TokenClaims]:
    """Every token of the chain, this one first, without checking signatures."""
    chain = [decode_token(token)]
    while chain[-1].parent is not None:
        if len(chain) >= MAX_CHAIN:
            raise TokenError(MALFORMED, f"delegation chain longer than {MAX_CHAIN}")
        chain.append(decode_token(chain[-1].parent))
    return chain


def encode_token(claims: TokenClaims, key: KeyPair) -> str:
    """Sign ``claims`` with ``key`` (whose id must be the claims' ``key_id``)."""
    if claims.key_id != key.kid:
        raise ValueError(f"claims name key {claims.key_id!r} but the key is {key.kid!r}")
    payload = orjson.dumps(claims.payload())
    return (_b64e(payload) + b"." + _b64e(key.sign(payload))).decode("ascii")


# -- verification ------------------------------------------------------------------------


def verify_token(
    token: str | bytes,
    keys: Mapping[str, Ed25519PublicKey],
    hierarchy: CapabilityHierarchy | None = None,
) -> VerifiedToken:
    """Check every link's signature with ``keys`` and every delegation's attenuation.

    Raises :class:`TokenError` with reason ``malformed-token``, ``unknown-key``,
    ``bad-signature`` or ``delegation-widened``. Time and revocation are the caller's to check.
    """
    raw = _as_bytes(token)
    chain: list[TokenClaims] = []
    current: str | bytes | None = raw
    while current is not None:
        if len(chain) >= MAX_CHAIN:
            raise TokenError(MALFORMED, f"delegation chain longer than {MAX_CHAIN}", chain[0])
        try:
            claims, payload, signature = split_token(current)
        except TokenError as exc:
            if not chain:
                raise
            message = f"parent of token {chain[-1].token_id}: {exc.message}"
            raise TokenError(exc.reason, message, chain[0]) from None
        public = keys.get(claims.key_id)
        leaf = chain[0] if chain else claims
        if public is None:
            raise TokenError(
                UNKNOWN_KEY,
                f"token {claims.token_id} is signed by key {claims.key_id!r}, "
                "which is not trusted here",
                leaf,
            )
        try:
            public.verify(signature, payload)
        except InvalidSignature:
            raise TokenError(
                BAD_SIGNATURE,
                f"token {claims.token_id}: signature does not verify with key {claims.key_id!r}",
                leaf,
            ) from None
        chain.append(claims)
        current = claims.parent
    for child, parent in itertools.pairwise(chain):
        problem = attenuation_problem(child, parent, hierarchy)
        if problem:
            raise TokenError(DELEGATION_WIDENED, problem, chain[0])
    return VerifiedToken(raw.decode("ascii"), tuple(chain))


def attenuation_problem(
    child: TokenClaims, parent: TokenClaims, hierarchy: CapabilityHierarchy | None = None
) -> str | None:
    """Why ``child`` is not a valid attenuation of ``parent``, or None when it is.

    Every child grant must be implied by some parent grant (operation through ``hierarchy``,
    resource pattern contained in the parent's), and the child's validity window must lie
    within the parent's.
    """
    h = hierarchy or _EMPTY_HIERARCHY
    for grant in child.grants:
        if not any(grant_covers(p, grant, h) for p in parent.grants):
            return (
                f"token {child.token_id} claims {grant}, which its parent "
                f"{parent.token_id} does not grant"
            )
    if child.not_before < parent.not_before:
        return f"token {child.token_id} starts before its parent {parent.token_id}"
    if child.expires > parent.expires:
        return f"token {child.token_id} outlives its parent {parent.token_id}"
    return None


def grant_covers(held: Capability, wanted: Capability, hierarchy: CapabilityHierarchy) -> bool:
    """True when holding ``held`` implies everything ``wanted`` (a pattern itself) allows."""
    if wanted.operation not in hierarchy.operations_implied_by(held.operation):
        return False
    return pattern_covers(held.resource, wanted.resource)


_MAX_PATTERN = 512


@lru_cache(maxsize=4096)
def pattern_covers(outer: str, inner: str) -> bool:
    """True when every resource matched by pattern ``inner`` is matched by ``outer``.

    Patterns use ``*`` (any run of characters without ``/``) and ``**`` (anything); a lone
    ``*`` matches anything. Sound, and exact for the patterns people write; in doubt (or for
    patterns longer than 512 characters) False.
    """
    if outer in ("*", "**"):
        return True
    if len(outer) > _MAX_PATTERN or len(inner) > _MAX_PATTERN:
        return outer == inner
    p, c = _glob_tokens(outer), _glob_tokens(inner)
    m = len(c)
    # below[j]: does p[i+1:] cover c[j:]; row[j]: does p[i:] cover c[j:]
    below = [j == m for j in range(m + 1)]
    for tok in reversed(p):
        row = [False] * (m + 1)
        for j in range(m, -1, -1):
            if tok == "**":
                row[j] = below[j] or (j < m and row[j + 1])
            elif tok == "*":
                row[j] = below[j] or (j < m and c[j] not in ("**", "/") and row[j + 1])
            else:
                row[j] = j < m and c[j] == tok and below[j + 1]
        below = row
    return below[0]


def _glob_tokens(pattern: str) -> tuple[str, ...]:
    """A pattern as single literal characters, ``*`` and ``**`` (a lone ``*`` means ``**``)."""
    if pattern in ("*", "**"):
        return ("**",)
    out: list[str] = []
    for part in re.split(r"(\*\*|\*)", pattern):
        if part in ("*", "**"):
            out.append(part)
        else:
            out.extend(part)
    return tuple(out)


# -- issuing -----------------------------------------------------------------------------

TTL = float | int | timedelta | str

_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_ttl(ttl: TTL) -> int:
    """Seconds from ``3600``, ``timedelta(hours=1)`` or ``"1h"`` (s, m, h, d, w)."""
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, str):
        found = _TTL_RE.match(ttl)
        if not found:
            raise ValueError(f"invalid duration {ttl!r}: use e.g. 90, 30s, 10m, 1h, 7d")
        seconds = float(found.group(1)) * _TTL_UNITS[found.group(2)]
    else:
        seconds = float(ttl)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {ttl!r}")
    return int(seconds)


def new_token_id() -> str:
    return secrets.token_hex(12)


def _grants(grants: Iterable[CapabilityLike]) -> tuple[Capability, ...]:
    caps = tuple(dict.fromkeys(as_capability(g) for g in grants))
    if not caps:
        raise ValueError("a token must grant at least one capability")
    if len(caps) > MAX_GRANTS:
        raise ValueError(f"a token grants at most {MAX_GRANTS} capabilities")
    return caps


def _check_name(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _NAME_MAX:
        raise ValueError(f"{what} must be a non-empty string of at most {_NAME_MAX} characters")
    return value


def issue_token(
    holder: str,
    grants: Iterable[CapabilityLike],
    *,
    key: KeyPair,
    ttl: TTL = 3600,
    issuer: str = DEFAULT_ISSUER,
    not_before: float | None = None,
    now: float | None = None,
    token_id: str | None = None,
) -> str:
    """A root token granting ``grants`` to ``holder`` from ``not_before`` (default: now)."""
    issued = int(time.time() if now is None else now)
    start = issued if not_before is None else int(not_before)
    claims = TokenClaims(
        token_id=_check_name("token id", token_id or new_token_id()),
        holder=_check_name("holder", holder),
        issuer=_check_name("issuer", issuer),
        key_id=key.kid,
        grants=_grants(grants),
        not_before=start,
        expires=start + parse_ttl(ttl),
        issued_at=issued,
    )
    return encode_token(claims, key)


def delegate_token(
    parent: str,
    holder: str,
    grants: Iterable[CapabilityLike],
    *,
    key: KeyPair,
    ttl: TTL = 3600,
    hierarchy: CapabilityHierarchy | None = None,
    issuer: str | None = None,
    now: float | None = None,
    token_id: str | None = None,
) -> str:
    """A token for ``holder`` granting a subset of what ``parent`` grants, for at most ``ttl``.

    Its validity is clipped to the parent's (it never outlives it). Grants the parent does not
    imply (through ``hierarchy`` when given) raise :class:`TokenError` ``delegation-widened``;
    workers check the same again, with the topology's hierarchy, on every chain they verify.
    The issuer defaults to the parent's holder: the one who delegates.
    """
    parent_claims = decode_token(parent)
    issued = int(time.time() if now is None else now)
    if issued >= parent_claims.expires:
        raise TokenError(EXPIRED, f"parent token {parent_claims.token_id} has expired")
    start = max(issued, parent_claims.not_before)
    claims = TokenClaims(
        token_id=_check_name("token id", token_id or new_token_id()),
        holder=_check_name("holder", holder),
        issuer=_check_name("issuer", issuer or parent_claims.holder),
        key_id=key.kid,
        grants=_grants(grants),
        not_before=start,
        expires=min(start + parse_ttl(ttl), parent_claims.expires),
        issued_at=issued,
        parent=parent,
    )
    if len(decode_chain(parent)) >= MAX_CHAIN:
        raise TokenError(MALFORMED, f"delegation chain would be longer than {MAX_CHAIN}")
    problem = attenuation_problem(claims, parent_claims, hierarchy)
    if problem:
        raise TokenError(DELEGATION_WIDENED, problem, claims)
    return encode_token(claims, key)


class Issuer:
    """Issues and delegates tokens with one key, on a clock (``time.time`` or a virtual one)."""

    def __init__(
        self,
        key: KeyPair,
        *,
        name: str = DEFAULT_ISSUER,
        clock: Callable[[], float] = time.time,
        hierarchy: CapabilityHierarchy | None = None,
    ) -> None:
        self.key = key
        self.name = name
        self.clock = clock
        self.hierarchy = hierarchy

    def issue(
        self,
        holder: str,
        grants: Iterable[CapabilityLike],
        *,
        ttl: TTL = 3600,
        not_before: float | None = None,
        token_id: str | None = None,
    ) -> str:
        return issue_token(
            holder,
            grants,
            key=self.key,
            ttl=ttl,
            issuer=self.name,
            not_before=not_before,
            now=self.clock(),
            token_id=token_id,
        )

    def delegate(
        self,
        parent: str,
        holder: str,
        grants: Iterable[CapabilityLike],
        *,
        ttl: TTL = 3600,
        token_id: str | None = None,
    ) -> str:
        return delegate_token(
            parent,
            holder,
            grants,
            key=self.key,
            ttl=ttl,
            hierarchy=self.hierarchy,
            now=self.clock(),
            token_id=token_id,
        )
