"""A topology's security settings and the keys directory they read.

:class:`SecuritySettings` (also ``Security``) says which public keys may sign tokens, whether
plain capabilities are accepted, what is audited and which worker secret seals internal
intents; :class:`KeyStore` is the directory behind them (``$PACKETFLOW_KEYS``, default
``$PACKETFLOW_HOME/keys``): ``<kid>.key`` signs tokens, ``<kid>.pub`` verifies them,
``worker.secret`` seals what workers emit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from packetflow.core.tokens import (
    KeyPair,
    PublicKeyLike,
    check_key_id,
    load_public_key,
    public_keys,
    public_pem,
)
from packetflow.engine.paths import packetflow_home
from packetflow.engine.security.seal import (
    PREVIOUS_SECRET_FILE,
    PROCESS_SECRET,
    SECRET_FILE,
    Sealer,
    SealError,
    new_secret,
    parse_secret,
)

log = logging.getLogger("packetflow.security")


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


@dataclass
class SecuritySettings:
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
    ``token_cache``: how many distinct tokens a worker keeps verified, and how many refused
    (each an LRU cache; a token forgotten is verified again when it comes back).
    """

    trusted_keys: Mapping[str, PublicKeyLike] | Iterable[KeyPair] | None = None
    keys_dir: str | Path | None = None
    allow_unsigned: bool = False
    audit_allowed: bool = False
    key_refresh: float = 10.0
    worker_secret: str | bytes | None = None
    token_cache: int = 65_536

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

    def trusting(self, keys: Mapping[str, Ed25519PublicKey]) -> SecuritySettings:
        """A copy that trusts exactly its explicit keys (none when dir-based) plus ``keys``."""
        explicit = {} if self.trusted_keys is None else public_keys(self.trusted_keys)
        return replace(self, trusted_keys={**explicit, **keys})




Security = SecuritySettings  # the name topologies have used since the first release
