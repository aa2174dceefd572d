"""The token format: claims, encoding and decoding, verification, and why a token fails.

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
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from packetflow.core.capability import Capability, CapabilityHierarchy
from packetflow.core.tokens.attenuation import grant_covers
from packetflow.core.tokens.keys import KeyPair

TOKEN_VERSION = 1
MAX_TOKEN_BYTES = 16 * 1024  # a chain of MAX_CHAIN tokens with a few grants each fits easily
MAX_CHAIN = 8  # a root and at most seven delegations
MAX_GRANTS = 64
DEFAULT_ISSUER = "packetflow"

# Why a record is refused: the ``pf-reason`` of a denied record. The token's own reasons
# first, then those the engine's guard adds (all in one place, as the README's table).
BAD_SIGNATURE = "bad-signature"
UNKNOWN_KEY = "unknown-key"
EXPIRED = "expired"
NOT_YET_VALID = "not-yet-valid"
REVOKED = "revoked"
DELEGATION_WIDENED = "delegation-widened"
MALFORMED = "malformed-token"
INSUFFICIENT = "insufficient"  # the token is fine but does not cover what the intent needs
PRINCIPAL_MISMATCH = "principal-mismatch"  # the context names someone else than the holder
UNSIGNED_INTERNAL = "unsigned-internal"  # an internal intent without a worker's seal
BAD_REPLY_TO = "bad-reply-to"  # reply_to names a topic that is not a reply topic
OUTSIDE_WINDOW = "outside-window"  # granted, but only in a window that is not open now
# keyed otherwise than its key field says: the capability checked is for one key, the state
# and the instance it would act on another's
KEY_MISMATCH = "key-mismatch"

_B64_RE = re.compile(rb"^[A-Za-z0-9_-]+$")
MAX_NAME = 256
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
        if not isinstance(value, str) or not value or len(value) > MAX_NAME:
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


