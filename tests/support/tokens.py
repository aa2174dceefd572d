"""Tokens no issuer would make (expired, not yet valid, widened, signed by anyone), for the
tests that show how the engine refuses or replays them."""

from __future__ import annotations

import time
import uuid

from packetflow import Capability, KeyPair
from packetflow.core.tokens import TokenClaims, encode_token


def forge(key: KeyPair, parent: str | None, holder: str, grants: list[str], **times: int) -> str:
    """A token signed by ``key`` with any claims, bypassing every issuing check; ``nbf`` and
    ``exp`` (epoch seconds) default to 5 s ago and 10 minutes ahead."""
    now = int(time.time())
    return encode_token(
        TokenClaims(
            token_id=f"forged-{uuid.uuid4().hex[:8]}", holder=holder, issuer="forger",
            key_id=key.kid, grants=tuple(Capability.parse(g) for g in grants),
            not_before=times.get("nbf", now - 5), expires=times.get("exp", now + 600),
            issued_at=now - 5, parent=parent,
        ),
        key,
    )
