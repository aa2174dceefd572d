"""Capability tokens: signed, time-bounded grants of capabilities to a holder, and delegation.

One idea a module: ``keys`` (Ed25519 key pairs and key ids), ``claims`` (the token format,
verification, and every reason a record is refused), ``attenuation`` (whether one grant
implies another) and ``issuing`` (lifetimes, issuing and delegating). Pure: no I/O and no
clock of its own (callers pass ``now``); revocation is the engine's. This face keeps every
name importable from ``packetflow.core.tokens``. May import: ``packetflow.core.capability``.
"""

from __future__ import annotations

from packetflow.core.tokens.attenuation import (
    grant_covers,
    pattern_covers,
)
from packetflow.core.tokens.claims import (
    BAD_REPLY_TO,
    BAD_SIGNATURE,
    DEFAULT_ISSUER,
    DELEGATION_WIDENED,
    EXPIRED,
    INSUFFICIENT,
    KEY_MISMATCH,
    MALFORMED,
    MAX_CHAIN,
    MAX_GRANTS,
    MAX_NAME,
    MAX_TOKEN_BYTES,
    NOT_YET_VALID,
    OUTSIDE_WINDOW,
    PRINCIPAL_MISMATCH,
    REVOKED,
    TOKEN_VERSION,
    UNKNOWN_KEY,
    UNSIGNED_INTERNAL,
    TokenClaims,
    TokenError,
    VerifiedToken,
    attenuation_problem,
    decode_chain,
    decode_token,
    encode_token,
    split_token,
    verify_token,
)
from packetflow.core.tokens.issuing import (
    TTL,
    Issuer,
    delegate_token,
    issue_token,
    new_token_id,
    parse_ttl,
)
from packetflow.core.tokens.keys import (
    KeyPair,
    PublicKeyLike,
    check_key_id,
    key_id_for,
    load_public_key,
    public_keys,
    public_pem,
)

__all__ = [
    "BAD_REPLY_TO",
    "BAD_SIGNATURE",
    "DEFAULT_ISSUER",
    "DELEGATION_WIDENED",
    "EXPIRED",
    "INSUFFICIENT",
    "KEY_MISMATCH",
    "MALFORMED",
    "MAX_CHAIN",
    "MAX_GRANTS",
    "MAX_NAME",
    "MAX_TOKEN_BYTES",
    "NOT_YET_VALID",
    "OUTSIDE_WINDOW",
    "PRINCIPAL_MISMATCH",
    "REVOKED",
    "TOKEN_VERSION",
    "TTL",
    "UNKNOWN_KEY",
    "UNSIGNED_INTERNAL",
    "Issuer",
    "KeyPair",
    "PublicKeyLike",
    "TokenClaims",
    "TokenError",
    "VerifiedToken",
    "attenuation_problem",
    "check_key_id",
    "decode_chain",
    "decode_token",
    "delegate_token",
    "encode_token",
    "grant_covers",
    "issue_token",
    "key_id_for",
    "load_public_key",
    "new_token_id",
    "parse_ttl",
    "pattern_covers",
    "public_keys",
    "public_pem",
    "split_token",
    "verify_token",
]
