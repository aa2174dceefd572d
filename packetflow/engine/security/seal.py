"""Seals: how workers authenticate what they emit, so an internal intent cannot be forged.

Anyone who can produce to a topic can write any bytes, so an intent type that only reactors
emit (``internal=True``) would be open to forgery if it were accepted as it comes. Workers
therefore **seal** what they emit of such types: an HMAC-SHA256, under a secret that only
workers hold, over the record's topic, key, intent type, value, ``pf-context`` and
``pf-token`` headers. A worker accepts an internal intent only with a seal it can verify
(``pf-reason: unsigned-internal`` otherwise). HMAC rather than a signature: ~2 µs per record
where Ed25519 costs ~34 µs to sign and ~116 µs to verify on the machines we measured.

The secret is 32 random bytes in ``<keys dir>/worker.secret`` (``packetflow caps secret``),
distributed to every worker of a topology like a private key; ``worker.secret.previous``
(left by ``caps secret --rotate``) still verifies, so workers can be rotated one by one.
``pf-mac`` is ``<fingerprint>.<base64url mac>``, the fingerprint naming which secret sealed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable

SECRET_FILE = "worker.secret"
PREVIOUS_SECRET_FILE = "worker.secret.previous"
SECRET_BYTES = 32

# memory:// workers live in one process: when no secret is configured they share this one.
PROCESS_SECRET = os.urandom(SECRET_BYTES)


class SealError(ValueError):
    """A worker secret that cannot be used (wrong size, unreadable)."""


def fingerprint(secret: bytes) -> str:
    """A short public name for a secret (which one sealed a record); reveals nothing of it."""
    return hashlib.sha256(b"pf-secret-id\0" + secret).hexdigest()[:8]


def parse_secret(text: str | bytes) -> bytes:
    """A secret from its file or setting: 64 hex characters (what ``caps secret`` writes)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    try:
        secret = bytes.fromhex(text.strip())
    except ValueError:
        raise SealError("a worker secret is 64 hexadecimal characters") from None
    if len(secret) < 16:
        raise SealError(f"a worker secret needs at least 16 bytes, this one has {len(secret)}")
    return secret


def new_secret() -> str:
    """A new secret, as written to ``worker.secret``."""
    return os.urandom(SECRET_BYTES).hex()


class Sealer:
    """Seals with the first secret and verifies with any of them."""

    def __init__(self, secrets: Iterable[bytes]) -> None:
        ordered = list(dict.fromkeys(secrets))
        if not ordered:
            raise SealError("a sealer needs at least one secret")
        self._current = ordered[0]
        self._prefix = fingerprint(ordered[0]).encode() + b"."
        self._by_id = {fingerprint(s).encode(): s for s in ordered}

    @property
    def fingerprints(self) -> list[str]:
        return [f.decode() for f in self._by_id]

    def seal(
        self,
        topic: str,
        key: bytes | None,
        type_name: bytes,
        value: bytes,
        context_raw: bytes | None,
        token_raw: bytes | None,
    ) -> bytes:
        """The ``pf-mac`` header value for a record about to be sent to ``topic``."""
        mac = _mac(self._current, topic, key, type_name, value, context_raw, token_raw)
        return self._prefix + base64.urlsafe_b64encode(mac).rstrip(b"=")

    def verify(
        self,
        mac_raw: bytes | None,
        topic: str,
        key: bytes | None,
        type_name: bytes,
        value: bytes,
        context_raw: bytes | None,
        token_raw: bytes | None,
    ) -> str | None:
        """None when ``mac_raw`` seals exactly this record; otherwise why not."""
        if not mac_raw:
            return "it carries no worker seal (pf-mac)"
        kid, dot, encoded = mac_raw.partition(b".")
        secret = self._by_id.get(kid)
        if not dot or secret is None:
            return "its seal is not from a secret this worker holds"
        try:
            given = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
        except ValueError:
            return "its seal is not base64url"
        expected = _mac(secret, topic, key, type_name, value, context_raw, token_raw)
        if not hmac.compare_digest(given, expected):
            return "its seal does not match its topic, key, type, value, context and token"
        return None


def _mac(
    secret: bytes,
    topic: str,
    key: bytes | None,
    type_name: bytes,
    value: bytes,
    context_raw: bytes | None,
    token_raw: bytes | None,
) -> bytes:
    # Each part is length-prefixed, so no two different records feed the same bytes.
    h = hmac.new(secret, b"pf-mac-v1", hashlib.sha256)
    for part in (topic.encode(), key, type_name, value, context_raw, token_raw):
        if part is None:
            h.update(b"\xff\xff\xff\xff")
        else:
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
    return h.digest()
