"""Attenuation: whether one grant implies another (a delegated token may only narrow)."""

from __future__ import annotations

import re
from functools import lru_cache

from packetflow.core.capability import Capability, CapabilityHierarchy


def grant_covers(held: Capability, wanted: Capability, hierarchy: CapabilityHierarchy) -> bool:
    """True when holding ``held`` implies everything ``wanted`` (a pattern itself) allows."""
    if wanted.operation not in hierarchy.operations_implied_by(held.operation):
        return False
    if held.calendar is not None and (
        wanted.calendar is None or not held.calendar.covers(wanted.calendar)
    ):  # a window may only narrow
        return False
    return pattern_covers(held.resource, wanted.resource)


_MAX_PATTERN = 512


@lru_cache(maxsize=4096)
def pattern_covers(outer: str, inner: str) -> bool:
    """True when every resource matched by pattern ``inner`` is matched by ``outer``.

    Patterns use ``*`` (any run of characters without ``/``) and ``**`` (anything); a lone
    ``*`` matches anything. Sound, and exact for the patterns people write; in doubt (or for
    patterns longer than 512 characters) False.
    """
    if outer in ("*", "**"):
        return True
    if len(outer) > _MAX_PATTERN or len(inner) > _MAX_PATTERN:
        return outer == inner
    p, c = _glob_tokens(outer), _glob_tokens(inner)
    m = len(c)
    # below[j]: does p[i+1:] cover c[j:]; row[j]: does p[i:] cover c[j:]
    below = [j == m for j in range(m + 1)]
    for tok in reversed(p):
        row = [False] * (m + 1)
        for j in range(m, -1, -1):
            if tok == "**":
                row[j] = below[j] or (j < m and row[j + 1])
            elif tok == "*":
                row[j] = below[j] or (j < m and c[j] not in ("**", "/") and row[j + 1])
            else:
                row[j] = j < m and c[j] == tok and below[j + 1]
        below = row
    return below[0]


def _glob_tokens(pattern: str) -> tuple[str, ...]:
    """A pattern as single literal characters, ``*`` and ``**`` (a lone ``*`` means ``**``)."""
    if pattern in ("*", "**"):
        return ("**",)
    out: list[str] = []
    for part in re.split(r"(\*\*|\*)", pattern):
        if part in ("*", "**"):
            out.append(part)
        else:
            out.extend(part)
    return tuple(out)


