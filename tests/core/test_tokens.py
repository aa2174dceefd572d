"""Unit tests of capability tokens (packetflow.core.tokens) and the guard's decisions:
issue, verify, delegate, attenuate, expire, revoke, rotate keys; and the key store on disk."""

from __future__ import annotations

import base64
import json
import stat
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from packetflow import (
    Capability,
    CapabilityHierarchy,
    Context,
    Intent,
    Issuer,
    KeyPair,
    KeyStore,
    Security,
    TokenError,
    Topology,
    decode_token,
    delegate_token,
    issue_token,
    verify_token,
)
from packetflow.core.tokens import (
    MAX_CHAIN,
    MAX_TOKEN_BYTES,
    TokenClaims,
    decode_chain,
    encode_token,
    key_id_for,
    parse_ttl,
    pattern_covers,
)
from packetflow.engine.clock import VirtualClock
from packetflow.engine.security import Guard, revocation_record
from packetflow.engine.transport import Record

NOW = 1_800_000_000
KEY = KeyPair.generate("k1")
KEYS = {KEY.kid: KEY.public}
BANK = CapabilityHierarchy({"teller": ["deposit", "withdraw", "read"], "auditor": ["read"]})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(key: KeyPair, **fields: object) -> str:
    """A token with any claims at all, signed by ``key`` (bypassing every issuing check)."""
    claims = {
        "token_id": "t-crafted", "holder": "eve", "issuer": "eve", "key_id": key.kid,
        "grants": (Capability.parse("read:*"),), "not_before": NOW, "expires": NOW + 60,
        "issued_at": NOW, "parent": None,
    }
    claims.update(fields)
    return encode_token(TokenClaims(**claims), key)  # type: ignore[arg-type]


# -- issue and verify ----------------------------------------------------------------------


def test_issue_and_verify() -> None:
    token = issue_token("alice", ["withdraw:account/*", "read:**"], key=KEY, ttl="1h", now=NOW,
                        token_id="t1")
    verified = verify_token(token, KEYS)
    assert verified.token == token and verified.token_id == "t1" and verified.holder == "alice"
    assert [str(g) for g in verified.grants] == ["withdraw:account/*", "read:**"]
    assert (verified.not_before, verified.expires) == (NOW, NOW + 3600)
    assert verified.valid_at(NOW) and verified.valid_at(NOW + 3599)
    assert not verified.valid_at(NOW - 1) and not verified.valid_at(NOW + 3600)
    claims = decode_token(token)
    assert (claims.issuer, claims.key_id, claims.issued_at, claims.parent) == (
        "packetflow", "k1", NOW, None,
    )


def test_token_layout_is_payload_dot_signature() -> None:
    token = issue_token("alice", ["read:*"], key=KEY, now=NOW, token_id="t1")
    head, sig = token.split(".")
    assert "=" not in token
    payload = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    assert json.loads(payload) == {
        "v": 1, "jti": "t1", "sub": "alice", "iss": "packetflow", "kid": "k1",
        "grants": ["read:*"], "nbf": NOW, "exp": NOW + 3600, "iat": NOW, "parent": None,
    }
    KEY.public.verify(base64.urlsafe_b64decode(sig + "=="), payload)  # Ed25519 over the bytes


def test_not_before_and_durations() -> None:
    token = issue_token("a", ["read:*"], key=KEY, ttl=timedelta(minutes=5), now=NOW,
                        not_before=NOW + 100)
    claims = decode_token(token)
    assert (claims.not_before, claims.expires, claims.issued_at) == (NOW + 100, NOW + 400, NOW)
    assert [parse_ttl(x) for x in (90, "90", "30s", "10m", "1h", "2d", "1w", 1.5)] == [
        90, 90, 30, 600, 3600, 172800, 604800, 1,
    ]
    for bad in ("", "1y", "-5", 0, "soon"):
        with pytest.raises(ValueError):
            parse_ttl(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grants": []}, "at least one capability"),
        ({"grants": [":x"]}, "invalid capability"),
        ({"holder": ""}, "holder"),
        ({"ttl": 0}, "positive"),
    ],
)
def test_issue_refuses_nonsense(kwargs: dict, message: str) -> None:
    args = {"holder": "a", "grants": ["read:*"], **kwargs}
    with pytest.raises(ValueError, match=message):
        issue_token(args.pop("holder"), args.pop("grants"), key=KEY, **args)


def test_key_ids_and_pem_round_trip() -> None:
    generated = KeyPair.generate()
    assert generated.kid == key_id_for(generated.public) and generated.kid.startswith("k")
    again = KeyPair.from_pem(generated.private_pem(), generated.kid)
    token = issue_token("a", ["read:*"], key=again)
    assert verify_token(token, {generated.kid: generated.public}).holder == "a"
    with pytest.raises(ValueError, match="invalid key id"):
        KeyPair.generate("no/slashes")


# -- refusals --------------------------------------------------------------------------------


def test_unknown_key() -> None:
    other = KeyPair.generate("k2")
    token = issue_token("a", ["read:*"], key=other)
    with pytest.raises(TokenError) as info:
        verify_token(token, KEYS)
    assert info.value.reason == "unknown-key" and "'k2'" in info.value.message
    assert info.value.claims is not None and info.value.claims.holder == "a"


def test_bad_signature_same_kid_other_key() -> None:
    impostor = KeyPair.generate("k1")  # claims the trusted key id
    token = issue_token("a", ["admin:**"], key=impostor)
    with pytest.raises(TokenError) as info:
        verify_token(token, KEYS)
    assert info.value.reason == "bad-signature"


def test_changed_payload_breaks_the_signature() -> None:
    token = issue_token("alice", ["read:account/a1"], key=KEY, now=NOW)
    head, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    payload["grants"] = ["admin:**"]
    with pytest.raises(TokenError) as info:
        verify_token(b64(orjson.dumps(payload)) + "." + sig, KEYS)
    assert info.value.reason == "bad-signature"


def test_every_single_character_change_is_refused() -> None:
    token = issue_token("alice", ["withdraw:account/*"], key=KEY, now=NOW)
    refused = set()
    for i in range(len(token)):
        for ch in "AQgw_-.=+/ ":
            changed = token[:i] + ch + token[i + 1 :]
            if changed == token:
                continue
            with pytest.raises(TokenError) as info:
                verify_token(changed, KEYS)
            refused.add(info.value.reason)
    assert refused <= {"malformed-token", "bad-signature", "unknown-key"}


@pytest.mark.parametrize(
    "token",
    [
        "", ".", "abc", "abc.", ".abc", "a.b.c", "é.x", "!!!.???",
        b64(b"not json") + "." + b64(b"\0" * 64),
        b64(b"[1, 2]") + "." + b64(b"\0" * 64),
        b64(b'{"v": 1}') + "." + b64(b"\0" * 64),
        b64(b'{"v": 1}') + "." + b64(b"\0" * 10),
        "A" * (MAX_TOKEN_BYTES + 1),
    ],
)
def test_malformed(token: str) -> None:
    with pytest.raises(TokenError) as info:
        verify_token(token, KEYS)
    assert info.value.reason == "malformed-token"


def test_non_canonical_base64_is_malformed() -> None:
    token = issue_token("a", ["read:*"], key=KEY, now=NOW)
    head, sig = token.split(".")
    # the last character of an unpadded base64 group carries unused bits: flip one of them
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = sig[:-1] + alphabet[last ^ 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(sig + "==")
    with pytest.raises(TokenError) as info:
        verify_token(head + "." + twin, KEYS)
    assert info.value.reason == "malformed-token"


@pytest.mark.parametrize(
    "fields",
    [
        {"grants": ()},
        {"token_id": ""},
        {"not_before": "soon"},
        {"expires": True},
        {"grants": ("x",) * 65},
    ],
)
def test_signed_but_malformed_claims(fields: dict) -> None:
    payload = TokenClaims(
        token_id="t", holder="h", issuer="i", key_id="k1", grants=(Capability.parse("read:*"),),
        not_before=NOW, expires=NOW + 1, issued_at=NOW,
    ).payload()
    rename = {"token_id": "jti", "not_before": "nbf", "expires": "exp"}
    for name, value in fields.items():
        payload[rename.get(name, name)] = list(value) if isinstance(value, tuple) else value
    raw = orjson.dumps(payload)
    token = b64(raw) + "." + b64(KEY.sign(raw))
    with pytest.raises(TokenError) as info:
        verify_token(token, KEYS)
    assert info.value.reason == "malformed-token"


# -- delegation and attenuation ----------------------------------------------------------


def test_delegate_attenuates_and_chains() -> None:
    parent = issue_token("alice", ["teller:account/*"], key=KEY, ttl="1h", now=NOW, token_id="p")
    child = delegate_token(parent, "bob", ["withdraw:account/a1"], key=KEY, ttl="10m",
                           hierarchy=BANK, now=NOW + 60, token_id="c")
    verified = verify_token(child, KEYS, BANK)
    assert [c.token_id for c in verified.chain] == ["c", "p"]
    assert [c.holder for c in verified.chain] == ["bob", "alice"]
    assert verified.chain[0].issuer == "alice"  # the one who delegated
    assert (verified.not_before, verified.expires) == (NOW + 60, NOW + 660)
    assert [c.token_id for c in decode_chain(child)] == ["c", "p"]

    grandchild = delegate_token(child, "carol", ["withdraw:account/a1"], key=KEY, ttl="1d",
                                hierarchy=BANK, now=NOW + 120)
    assert decode_token(grandchild).expires == NOW + 660  # clipped to the chain's expiry
    assert len(verify_token(grandchild, KEYS, BANK).chain) == 3


@pytest.mark.parametrize(
    "grant",
    [
        "withdraw:account/**",  # wider resource
        "withdraw:*",  # anything at all
        "admin:account/a1",  # an operation the role does not imply
        "teller:account/a1/x",  # '*' is one path segment
    ],
)
def test_delegation_cannot_widen(grant: str) -> None:
    parent = issue_token("alice", ["teller:account/*"], key=KEY, now=NOW)
    with pytest.raises(TokenError) as info:
        delegate_token(parent, "bob", [grant], key=KEY, hierarchy=BANK, now=NOW)
    assert info.value.reason == "delegation-widened"
    # signed anyway, bypassing the issuing check: every worker refuses it
    forged = craft(KEY, grants=(Capability.parse(grant),), parent=parent, holder="bob")
    with pytest.raises(TokenError) as info:
        verify_token(forged, KEYS, BANK)
    assert info.value.reason == "delegation-widened"
    assert grant in info.value.message


def test_operations_implied_only_through_the_hierarchy() -> None:
    parent = issue_token("alice", ["teller:account/*"], key=KEY, now=NOW)
    child = delegate_token(parent, "bob", ["withdraw:account/a1"], key=KEY, hierarchy=BANK,
                           now=NOW)
    with pytest.raises(TokenError) as info:  # without the hierarchy, teller does not imply it
        verify_token(child, KEYS)
    assert info.value.reason == "delegation-widened"
    with pytest.raises(TokenError):
        delegate_token(parent, "bob", ["withdraw:account/a1"], key=KEY, now=NOW)


def test_child_cannot_outlive_or_predate_its_parent() -> None:
    parent = issue_token("alice", ["read:*"], key=KEY, ttl=60, now=NOW)
    for fields in ({"expires": NOW + 61}, {"not_before": NOW - 1}):
        forged = craft(KEY, parent=parent, **fields)
        with pytest.raises(TokenError) as info:
            verify_token(forged, KEYS)
        assert info.value.reason == "delegation-widened"
    with pytest.raises(TokenError) as expired:
        delegate_token(parent, "bob", ["read:*"], key=KEY, now=NOW + 60)
    assert expired.value.reason == "expired"


def test_a_delegated_token_is_refused_when_its_parent_is_forged() -> None:
    rogue = KeyPair.generate("rogue")
    parent = issue_token("mallory", ["admin:**"], key=rogue, now=NOW)
    child = craft(KEY, parent=parent)  # a real key signed the child, never the parent
    with pytest.raises(TokenError) as info:
        verify_token(child, KEYS)
    assert info.value.reason == "unknown-key"
    assert info.value.claims is not None and info.value.claims.token_id == "t-crafted"


def test_chain_length_is_bounded() -> None:
    token = issue_token("a0", ["read:*"], key=KEY, now=NOW)
    for n in range(1, MAX_CHAIN):
        token = delegate_token(token, f"a{n}", ["read:*"], key=KEY, now=NOW)
    assert len(verify_token(token, KEYS).chain) == MAX_CHAIN
    with pytest.raises(TokenError, match="longer than"):
        delegate_token(token, "one-too-many", ["read:*"], key=KEY, now=NOW)
    with pytest.raises(TokenError) as info:
        verify_token(craft(KEY, parent=token), KEYS)
    assert info.value.reason == "malformed-token"


@pytest.mark.parametrize(
    ("outer", "inner", "covers"),
    [
        ("account/*", "account/a1", True),
        ("account/*", "account/*", True),
        ("account/*", "account/a*", True),
        ("account/*", "account/**", False),
        ("account/*", "account/a1/x", False),
        ("account/**", "account/a1/x", True),
        ("account/**", "account/*/x", True),
        ("*", "anything/**", True),
        ("**", "*", True),
        ("account/a*", "account/*", False),
        ("account/a1", "account/*", False),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/**/c", False),
    ],
)
def test_pattern_containment(outer: str, inner: str, covers: bool) -> None:
    assert pattern_covers(outer, inner) is covers
    if covers:  # sound: whatever the inner pattern matches, the outer matches too
        for resource in ("account/a1", "account/a1/x", "a/b/c", "anything/x/y"):
            if Capability(operation="x", resource=inner).matches_resource(resource):
                assert Capability(operation="x", resource=outer).matches_resource(resource)


# -- the guard: expiry, revocation, rotation ---------------------------------------------


class Withdraw(Intent, type_name="tok.Withdraw", key="account",
               requires=["withdraw:account/{account}"]):
    account: str


def guard(clock: VirtualClock, keys: dict | None = None, **security: object) -> Guard:
    topo = Topology("tok", capabilities=BANK.as_dict(), namespace="")
    return Guard(topo.hierarchy, Security(trusted_keys=keys or KEYS, **security), clock)  # type: ignore[arg-type]


def decide(g: Guard, token: str | bytes | None, account: str = "a1") -> str:
    raw = token.encode() if isinstance(token, str) else token
    ctx = Context.new()  # the principal becomes the token's holder
    denial = g.authorize(Withdraw(account=account).requirements(), raw, b"", ctx, "tok.Withdraw")
    return "allowed" if denial is None else denial.reason


def revoke(g: Guard, at: float, **who: str) -> None:
    key, value = revocation_record(at=at, by="ops", **who)
    g.apply([Record("tok.revocations", 0, 0, key, value, (), int(at * 1000))])


def test_guard_checks_time_on_its_clock() -> None:
    clock = VirtualClock(NOW)
    g = guard(clock)
    token = issue_token("alice", ["teller:account/*"], key=KEY, ttl=60, now=NOW,
                        not_before=NOW + 10)
    assert decide(g, token) == "not-yet-valid"
    clock.advance(10)
    assert decide(g, token) == "allowed"
    assert decide(g, token, "a2") == "allowed"
    clock.advance(59)
    assert decide(g, token) == "allowed"
    clock.advance(1)
    assert decide(g, token) == "expired"


def test_guard_insufficient_names_what_is_missing() -> None:
    g = guard(VirtualClock(NOW))
    token = issue_token("auditor", ["auditor:account/*"], key=KEY, now=NOW)
    ctx = Context.new(None)
    denial = g.authorize((("withdraw", "account/a1"),), token.encode(), b"", ctx, "tok.Withdraw")
    assert denial is not None and denial.reason == "insufficient"
    assert denial.missing == ("withdraw:account/a1",)
    assert denial.message == "auditor lacks withdraw:account/a1 for tok.Withdraw"


def test_guard_revokes_token_ids_and_holders_through_the_chain() -> None:
    clock = VirtualClock(NOW)
    g = guard(clock)
    alice = issue_token("alice", ["teller:account/*"], key=KEY, now=NOW, token_id="A")
    bob = delegate_token(alice, "bob", ["withdraw:account/a1"], key=KEY, hierarchy=BANK,
                         now=NOW, token_id="B")
    carol = issue_token("carol", ["teller:account/*"], key=KEY, now=NOW, token_id="C")
    assert [decide(g, t) for t in (alice, bob, carol)] == ["allowed"] * 3

    revoke(g, NOW + 1, token_id="A")  # the parent: its delegations go with it
    assert [decide(g, t) for t in (alice, bob, carol)] == ["revoked", "revoked", "allowed"]

    g.apply([Record("tok.revocations", 0, 1, b"token:A", None, (), 0)])  # a tombstone lifts it
    assert [decide(g, t) for t in (alice, bob, carol)] == ["allowed"] * 3

    revoke(g, NOW + 2, holder="carol")
    assert decide(g, carol) == "revoked"
    clock.advance(5)
    fresh = issue_token("carol", ["teller:account/*"], key=KEY, now=NOW + 5)
    assert decide(g, fresh) == "allowed"  # issued after the holder was revoked

    revoke(g, NOW + 6, holder="alice")  # revoking the delegating holder covers bob too
    assert [decide(g, t) for t in (alice, bob)] == ["revoked", "revoked"]


def test_guard_ignores_malformed_revocation_keys_but_honours_bad_values() -> None:
    g = guard(VirtualClock(NOW))
    token = issue_token("alice", ["teller:account/*"], key=KEY, now=NOW, token_id="X")
    for key in (None, b"", b"nothing", b"tenant:x"):
        g.apply([Record("r", 0, 0, key, b"{}", (), 0)])
    assert decide(g, token) == "allowed"
    g.apply([Record("r", 0, 1, b"token:X", b"not json", (), 0)])
    assert decide(g, token) == "revoked"



def test_the_guard_keeps_the_tokens_in_use_past_its_cache_size_and_forgeries_apart() -> None:
    """Bounded LRU caches: the least recently used token is the one verified again, and a
    flood of distinct refused tokens never pushes out an accepted one."""
    clock = VirtualClock(NOW)
    g = guard(clock, token_cache=3)
    tokens = [issue_token(f"t{i}", ["teller:account/*"], key=KEY, now=NOW) for i in range(4)]
    for token in tokens[:3]:
        assert decide(g, token) == "allowed"
    assert g.verifications == 3
    assert decide(g, tokens[0]) == "allowed"  # in use again: now the most recent
    assert decide(g, tokens[3]) == "allowed"  # pushes out tokens[1], the least recent
    assert g.verifications == 4
    assert [decide(g, t) for t in (tokens[0], tokens[2], tokens[3])] == ["allowed"] * 3
    assert g.verifications == 4  # none of them verified again
    assert decide(g, tokens[1]) == "allowed" and g.verifications == 5

    rogue = KeyPair.generate("rogue")
    forged = [issue_token("eve", ["teller:**"], key=rogue, now=NOW) for _ in range(10)]
    g = guard(clock, token_cache=3)
    assert decide(g, tokens[0]) == "allowed"
    for token in forged:
        assert decide(g, token) == "unknown-key"
    assert decide(g, forged[-1]) == "unknown-key"  # a refusal is remembered too
    assert g.verifications == 11
    assert decide(g, tokens[0]) == "allowed" and g.verifications == 11  # still there

    revoke(g, NOW + 1, holder="t0")  # a decision kept in the cache still meets revocations
    assert decide(g, tokens[0]) == "revoked"


GRANTS = [
    ["teller:account/*"],
    ["deposit:account/a-*", "read:**"],
    ["auditor:account/*/history", "withdraw:account/b?c"],
    ["teller:*"],
    ["read:account/**"],
]
RESOURCES = [
    "account/a-1", "account/b-2", "account/a-", "account/a-1/x", "account/b?c", "account/bxc",
    "account/a-1/history", "ledger/a-1", "", "account/", "account/(a)", "account/a.1",
]


@pytest.mark.parametrize("grants", GRANTS, ids=lambda g: ",".join(g))
def test_compiled_grants_decide_exactly_as_the_hierarchy(grants: list[str]) -> None:
    """The guard's per-operation regular expression (what makes the check one match per
    record whatever the number of accounts) against the reference: ``hierarchy.allows``."""
    g = guard(VirtualClock(NOW))
    token = issue_token("h", grants, key=KEY, now=NOW).encode()
    held = tuple(Capability.parse(c) for c in grants)
    for op in ("deposit", "withdraw", "read", "teller", "auditor", "unknown"):
        for resource in RESOURCES:
            ctx = Context.new()
            denial = g.authorize(((op, resource),), token, b"", ctx, "tok.X")
            assert (denial is None) == BANK.allows(held, op, resource), (op, resource)


def test_key_rotation() -> None:
    clock = VirtualClock(NOW)
    old, new = KeyPair.generate("old"), KeyPair.generate("new")
    g = guard(clock, {"old": old.public})
    by_old = issue_token("a", ["teller:account/*"], key=old, now=NOW)
    by_new = issue_token("a", ["teller:account/*"], key=new, now=NOW)
    assert (decide(g, by_old), decide(g, by_new)) == ("allowed", "unknown-key")
    g.set_keys({"old": old.public, "new": new.public})  # new key distributed
    assert (decide(g, by_old), decide(g, by_new)) == ("allowed", "allowed")
    g.set_keys({"new": new.public})  # old key retired
    assert (decide(g, by_old), decide(g, by_new)) == ("unknown-key", "allowed")


def test_key_rotation_through_the_keys_directory(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    old = store.generate("old")
    g = guard(VirtualClock(NOW), None)
    g.security = Security(keys_dir=store.path, key_refresh=0)
    g.refresh_keys(force=True)
    assert set(g.keys) == {"old"}
    new = store.generate("new")
    assert store.current_kid() == "new"
    assert g.refresh_keys()
    assert decide(g, issue_token("a", ["teller:account/*"], key=new, now=NOW)) == "allowed"
    (store.path / "old.pub").unlink()
    assert g.refresh_keys()
    assert decide(g, issue_token("a", ["teller:account/*"], key=old, now=NOW)) == "unknown-key"
    assert not g.refresh_keys()  # nothing changed since


def test_verification_is_cached_per_distinct_token(monkeypatch: pytest.MonkeyPatch) -> None:
    g = guard(VirtualClock(NOW))
    calls = []
    import packetflow.engine.security.guard as security

    real = security.verify_token
    monkeypatch.setattr(
        security, "verify_token", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    t1 = issue_token("a", ["teller:account/*"], key=KEY, now=NOW)
    t2 = issue_token("b", ["teller:account/*"], key=KEY, now=NOW)
    for _ in range(100):
        assert decide(g, t1) == decide(g, t2.encode() + b"") == "allowed"
    assert len(calls) == 2


def test_unsigned_capabilities_only_with_the_opt_in() -> None:
    clock = VirtualClock(NOW)
    ctx = Context.new("ann", ["teller:account/*"])
    required = (("withdraw", "account/a1"),)
    strict, lax = guard(clock), guard(clock, allow_unsigned=True)
    denial = strict.authorize(required, None, b'["teller:account/*"]', ctx, "tok.Withdraw")
    assert denial is not None and denial.reason == "insufficient"
    assert "plain capabilities are not accepted" in denial.message
    assert lax.authorize(required, None, b'["teller:account/*"]', ctx, "tok.Withdraw") is None


# -- issuer, key store, context ------------------------------------------------------------


def test_issuer_uses_its_clock_and_hierarchy() -> None:
    clock = VirtualClock(NOW)
    issuer = Issuer(KEY, name="bank", clock=clock.time, hierarchy=BANK)
    token = issuer.issue("alice", ["teller:account/*"], ttl="1h")
    child = issuer.delegate(token, "bob", ["withdraw:account/a1"], ttl="5m")
    assert decode_token(token).issuer == "bank" and decode_token(token).not_before == NOW
    assert decode_token(child).expires == NOW + 300


def test_key_store_files_and_permissions(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    with pytest.raises(LookupError, match="caps keygen"):
        store.load()
    pair = store.generate()
    assert stat.S_IMODE((store.path / f"{pair.kid}.key").stat().st_mode) == 0o600
    assert (store.path / f"{pair.kid}.pub").read_bytes() == pair.public_pem()
    assert store.load().kid == pair.kid
    with pytest.raises(FileExistsError):
        store.add(pair)
    verifier = KeyStore(tmp_path / "worker-keys")
    verifier.trust(pair.kid, pair.public_pem())
    token = issue_token("a", ["read:*"], key=store.load())
    assert verify_token(token, verifier.public_keys()).holder == "a"
    (store.path / "junk.pub").write_text("not a key")
    assert set(store.public_keys()) == {pair.kid}


def test_context_carries_a_token_or_capabilities_not_both() -> None:
    token = issue_token("a", ["read:*"], key=KEY)
    assert Context.new("a", token=token).token == token
    with pytest.raises(ValueError, match="not both"):
        Context.new("a", ["read:*"], token=token)
    with pytest.raises(ValueError):
        Context.new("a", token="spaces are not base64")
    child = Context.new("a", token=token).inherit("hop")
    assert child.token == token


def test_the_token_travels_in_its_own_header() -> None:
    from packetflow.engine.codec import CAPABILITIES_HEADER, TOKEN_HEADER, Decoder, encode, header

    token = issue_token("alice", ["withdraw:account/*"], key=KEY)
    value, headers = encode(Withdraw(account="a1"), Context.new("alice", token=token))
    assert header(headers, TOKEN_HEADER) == token.encode()
    assert header(headers, CAPABILITIES_HEADER) is None  # the token is the whole authority
    decoder = Decoder({"tok.Withdraw": Withdraw})
    record = Record("t", 0, 0, b"a1", value, headers, 0)
    envelope = decoder.decode_record(record)
    intent, context, raw = envelope.intent, envelope.context, envelope.token_raw
    assert intent == Withdraw(account="a1")
    assert context.token == token and raw == token.encode()
    assert context.inherit("hop").token == token
    odd = Record("t", 0, 0, b"a1", value, [*headers[:-1], (TOKEN_HEADER, b"\xff\xfe")], 0)
    envelope = decoder.decode_record(odd)
    context, raw = envelope.context, envelope.token_raw
    assert context.token is None and raw == b"\xff\xfe"  # left to the guard to refuse
