"""Issuing tokens: lifetimes, new tokens, delegation, and an issuer bound to a key and clock."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from packetflow.core.capability import (
    Capability,
    CapabilityHierarchy,
    CapabilityLike,
    as_capability,
)
from packetflow.core.tokens.claims import (
    DEFAULT_ISSUER,
    DELEGATION_WIDENED,
    EXPIRED,
    MALFORMED,
    MAX_CHAIN,
    MAX_GRANTS,
    MAX_NAME,
    TokenClaims,
    TokenError,
    attenuation_problem,
    decode_chain,
    decode_token,
    encode_token,
)
from packetflow.core.tokens.keys import KeyPair

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
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise ValueError(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
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
