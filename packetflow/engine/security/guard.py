"""The per-worker guard: whether a record may reach its reactors.

Every worker holds a :class:`Guard` for its topology. Before any reactor runs, the guard
decides whether the record's ``pf-token`` (or, only where the topology opted in, its plain
``pf-capabilities``) covers what the intent requires:

- the token's chain is verified once per distinct token (signatures with the trusted public
  keys by key id, and attenuation with the topology's capability hierarchy) and the result is
  kept by the raw header bytes, in two bounded LRU caches (``Security(token_cache=65536)``
  each): accepted tokens, and refused ones, so that a flood of distinct forgeries costs one
  check each and never evicts the tokens in use;
- then, per record: valid in time (``nbf <= now < exp`` on the worker's clock), not revoked
  (no token id of the chain, and no holder of the chain since the token was issued, is on
  the revocations topic), and every required capability implied by a granted one: each
  token's grants are compiled (``CapabilityHierarchy.compile``), per operation, into one
  regular expression of the resources they allow (through the hierarchy), so a
  requirement costs one match whatever the number of distinct resources (accounts) it
  names.

The principal a reactor sees is the verified holder of the token (``principal-mismatch``
when the context names someone else). Internal intents are authorised by a worker's seal
instead (:mod:`packetflow.engine.security.seal`); the guard holds the worker secrets.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from packetflow.core.capability import Capability, CapabilityHierarchy, CompiledGrants
from packetflow.core.context import Context
from packetflow.core.tokens import (
    BAD_REPLY_TO,
    EXPIRED,
    INSUFFICIENT,
    NOT_YET_VALID,
    OUTSIDE_WINDOW,
    PRINCIPAL_MISMATCH,
    REVOKED,
    UNSIGNED_INTERNAL,
    TokenClaims,
    TokenError,
    VerifiedToken,
    verify_token,
)
from packetflow.engine.agent import KEPT_BAGGAGE, KeptAuthority
from packetflow.engine.clock import Clock
from packetflow.engine.security.audit import iso as _iso
from packetflow.engine.security.revocations import Revocation
from packetflow.engine.security.seal import Sealer
from packetflow.engine.security.settings import SecuritySettings
from packetflow.engine.transport import Record

log = logging.getLogger("packetflow.security")

__all__ = ["BAD_REPLY_TO", "Denial", "Guard"]

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
        "matcher",
        "not_before",
        "revoked",
        "token",
    )

    def __init__(
        self, token: VerifiedToken | None, denial: Denial | None, hierarchy: CapabilityHierarchy
    ) -> None:
        self.token = token
        self.denial = denial
        self.holder: str | None = token.holder if token else None
        self.grants: tuple[Capability, ...] = token.grants if token else ()
        self.matcher = hierarchy.compile(self.grants)
        self.not_before = token.not_before if token else 0
        self.expires = token.expires if token else 0
        self.gen = -1
        self.revoked: Denial | None = None


V = TypeVar("V")


class _LRU(OrderedDict[bytes, V]):
    """A dictionary that forgets its least recently used entry past ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def find(self, key: bytes) -> V | None:
        entry = self.get(key)
        if entry is not None:
            self.move_to_end(key)
        return entry

    def keep(self, key: bytes, entry: V) -> None:
        self[key] = entry
        if len(self) > self.size:
            self.popitem(last=False)


class Guard:
    """One worker's authorisation of records for one topology (see the module docstring)."""

    def __init__(
        self,
        hierarchy: CapabilityHierarchy,
        security: SecuritySettings,
        clock: Clock,
        sealer: Sealer | None = None,
    ) -> None:
        self.security = security
        self.sealer = sealer
        self.hierarchy = hierarchy
        self.clock = clock
        self.allow_unsigned = security.allow_unsigned
        self.audit_allowed = security.audit_allowed
        self.keys: dict[str, Ed25519PublicKey] = security.resolve_keys()
        self._keys_checked = time.monotonic()
        size = security.token_cache
        self._accepted: _LRU[_Entry] = _LRU(size)  # verified tokens
        self._refused: _LRU[_Entry] = _LRU(size)  # tokens that failed verification: never again
        self.verifications = 0  # tokens verified (signatures checked) so far
        self._last_raw: bytes | None = None
        self._last_entry: _Entry | None = None
        self._unsigned: _LRU[CompiledGrants] = _LRU(size)  # by pf-capabilities
        self._behind: _LRU[KeptAuthority] = _LRU(size)  # by the pf.authority baggage
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
            entry = self._accepted.find(token_raw) or self._refused.find(token_raw)
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
        missing = entry.matcher.missing(required, self.clock.time())
        if missing:
            claims = entry.token.claims if entry.token else None
            who = context.principal or (claims.holder if claims else "anonymous")
            return self._refusal(entry.matcher, who, missing, intent_type, claims)
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
        entry = self._accepted.get(token_raw)
        if entry is None:
            return None  # not verified here (or forgotten): it was not what authorised it
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

    def authorize_plain(
        self,
        required: tuple[tuple[str, str], ...],
        caps_raw: bytes,
        context: Context,
        intent_type: str,
    ) -> Denial | None:
        """Plain capabilities (``context.capabilities``, from ``caps_raw``; compiled once per
        distinct header) against the requirements, on the worker's clock. The unsigned path
        ends here where a topology takes them; the processor calls it for a record a worker
        sealed (vouched for: a schedule's kept grants) even where it does not."""
        grants = self._unsigned.find(caps_raw)
        if grants is None:
            grants = self.hierarchy.compile(context.capabilities)
            self._unsigned.keep(caps_raw, grants)
        missing = grants.missing(required, self.clock.time())
        if missing:
            who = context.principal or "anonymous"
            return self._refusal(grants, who, missing, intent_type, None)
        return None

    def authorize_vouched(self, context: Context) -> Denial | None:
        """For a record a worker vouched for (sealed plain capabilities): the token behind
        them (``pf.authority`` baggage: a schedule's, an actor's) still holds now, neither
        expired nor revoked since the worker sent it. None: no token behind, or it holds."""
        behind = context.baggage.get(KEPT_BAGGAGE)
        if behind is None:
            return None
        raw = behind.encode()
        kept = self._behind.find(raw)
        if kept is None:
            try:
                kept = KeptAuthority.from_json(orjson.loads(raw))
            except (ValueError, TypeError, KeyError):
                return Denial(INSUFFICIENT, "the authority behind these capabilities is unreadable")
            self._behind.keep(raw, kept)
        lapsed = self.lapsed(kept)
        return None if lapsed is None else Denial(*lapsed)

    def _refusal(
        self,
        grants: CompiledGrants,
        who: str,
        missing: tuple[str, ...],
        intent_type: str,
        claims: TokenClaims | None,
    ) -> Denial:
        """``insufficient``, or ``outside-window`` when grants bounded by a window would
        allow it at another time."""
        windowed = grants.outside(missing)
        if windowed:
            at = _iso(self.clock.time())
            held = ", ".join(str(c) for c in windowed)
            return Denial(
                OUTSIDE_WINDOW,
                f"{who} holds {held}: not open at {at} for {intent_type}",
                missing,
                claims,
            )
        return Denial(INSUFFICIENT, _lacks(who, missing, intent_type), missing, claims)

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
        return self.authorize_plain(required, caps_raw, context, intent_type)

    def _verify(self, token_raw: bytes) -> _Entry:
        self.verifications += 1
        raw = bytes(token_raw)
        try:
            entry = _Entry(verify_token(raw, self.keys, self.hierarchy), None, self.hierarchy)
        except TokenError as exc:
            denial = Denial(exc.reason, exc.message, (), exc.claims)
            entry = _Entry(None, denial, self.hierarchy)
            self._refused.keep(raw, entry)
            return entry
        self._accepted.keep(raw, entry)
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
        chain = [(c.token_id, c.holder, c.issued_at) for c in entry.token.chain]
        why = self._revoked(chain)
        return None if why is None else Denial(REVOKED, why, (), entry.token.claims)

    def _revoked(self, chain: Iterable[tuple[str, str, int]]) -> str | None:
        """Why a token chain (id, holder, issued at; the token first) is revoked, or None."""
        for token_id, holder, issued_at in chain:
            rev = self.revoked_tokens.get(token_id)
            if rev is None:
                rev = self.revoked_holders.get(holder)
                if rev is not None and issued_at > rev.at:
                    rev = None  # issued after the holder was revoked
            if rev is not None:
                what = f"token {token_id}" if rev.kind == "token" else f"holder {holder}"
                by = f" by {rev.by}" if rev.by else ""
                why = f": {rev.reason}" if rev.reason else ""
                return f"{what} was revoked{by} at {_iso(rev.at)}{why}"
        return None

    # -- authority kept by agents (engine.agent.Authority) ----------------------------------

    def keep(self, context: Context) -> KeptAuthority:
        """What an agent keeps of the authority of a record this guard authorised."""
        grants = tuple(str(c) for c in context.capabilities)
        if context.token is None:
            behind = context.baggage.get(KEPT_BAGGAGE)
            if behind is not None and not self.allow_unsigned:  # vouched: a worker's seal
                try:
                    kept = KeptAuthority.from_json(orjson.loads(behind))
                except (ValueError, TypeError, KeyError):
                    return KeptAuthority(context.principal, (), expires=0.0)
                return replace(kept, principal=context.principal, grants=grants)
            return KeptAuthority(context.principal, grants)
        entry = self._accepted.get(context.token.encode())
        if entry is None or entry.token is None:  # not verified here: keep nothing of it
            return KeptAuthority(context.principal, (), expires=0.0)
        token = entry.token
        return KeptAuthority(
            principal=entry.holder,
            grants=tuple(str(c) for c in token.grants),
            token_id=token.token_id,
            chain=tuple((c.token_id, c.holder, c.issued_at) for c in token.chain),
            not_before=float(token.not_before),
            expires=float(token.expires),
        )

    def lapsed(self, kept: KeptAuthority) -> tuple[str, str] | None:
        now = self.clock.time()
        who = f"token {kept.token_id} of {kept.principal}"
        if kept.expires is not None and now >= kept.expires:
            return EXPIRED, f"{who} expired at {_iso(kept.expires)}"
        if now < kept.not_before:
            return NOT_YET_VALID, f"{who} is not valid before {_iso(kept.not_before)}"
        why = self._revoked(kept.chain) if kept.chain else None
        return None if why is None else (REVOKED, why)

    # -- revocations -----------------------------------------------------------------------

    def apply(self, records: list[Record]) -> list[Revocation]:
        """Take records of the revocations topic into account (a tombstone lifts one)."""
        applied = []
        for record in records:
            found = Revocation.from_record(record)
            if found is None:
                continue
            if isinstance(found, str):  # a tombstone: "kind:subject"
                kind, _, subject = found.partition(":")
                table = self.revoked_tokens if kind == "token" else self.revoked_holders
                if table.pop(subject, None) is not None:
                    self._gen += 1
                continue
            table = self.revoked_tokens if found.kind == "token" else self.revoked_holders
            table[found.subject] = found
            self._gen += 1
            applied.append(found)
        return applied

    def last_verified(self, context: Context) -> VerifiedToken | None:
        """The token :meth:`authorize` just accepted for ``context`` (None without one)."""
        entry = self._last_entry
        return entry.token if context.token is not None and entry is not None else None

    # -- keys ------------------------------------------------------------------------------

    def set_keys(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        """Trust exactly ``keys`` from now on (verification results are recomputed)."""
        self.keys = dict(keys)
        self._accepted.clear()
        self._refused.clear()
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

def _raw(keys: Mapping[str, Ed25519PublicKey]) -> dict[str, bytes]:
    return {
        k: v.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for k, v in keys.items()
    }


def _lacks(who: str, missing: tuple[str, ...], intent_type: str) -> str:
    return f"{who} lacks {', '.join(missing)} for {intent_type}"


