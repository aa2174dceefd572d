"""Token signing keys: Ed25519 key pairs, their key ids, and public keys in every form."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

_KID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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


