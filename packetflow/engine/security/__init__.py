"""The engine side of capabilities: who may do what, checked on every record.

- ``settings.py``: :class:`SecuritySettings` (``Security``), the keys directory
  (:class:`KeyStore`);
- ``guard.py``: the per-record check (:class:`Guard`, :class:`Denial`);
- ``seal.py``: the worker secret and seals of internal intents;
- ``revocations.py``: the revocations topic and following it;
- ``audit.py``: the audit topic and its one writer (:class:`Auditor`).

Tokens themselves (format, verification, issuing) are pure and live in
``packetflow.core.tokens``. May import: ``packetflow.core``, ``engine.transport``,
``engine.clock``, ``engine.paths``.
"""

from packetflow.engine.security.audit import Auditor, audit_record, token_audit_fields
from packetflow.engine.security.guard import Denial, Guard
from packetflow.engine.security.revocations import (
    Revocation,
    RevocationFollower,
    parse_revocation_key,
    revocation_key,
    revocation_record,
)
from packetflow.engine.security.seal import Sealer, SealError
from packetflow.engine.security.settings import (
    KeyStore,
    Security,
    SecuritySettings,
    default_keys_dir,
)

__all__ = [
    "Auditor",
    "Denial",
    "Guard",
    "KeyStore",
    "Revocation",
    "RevocationFollower",
    "SealError",
    "Sealer",
    "Security",
    "SecuritySettings",
    "audit_record",
    "default_keys_dir",
    "parse_revocation_key",
    "revocation_key",
    "revocation_record",
    "token_audit_fields",
]
