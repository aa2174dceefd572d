"""Capabilities: an operation on a resource pattern, and the hierarchy that says which imply which.

A capability is written ``operation:resource`` (``withdraw:account/42``, ``read:*``). A held
capability implies a required one when its operation equals or (transitively, through the
hierarchy) implies the required operation, and its resource pattern matches the required
resource. Resource patterns use ``*`` for one path segment and ``**`` (or a lone ``*``) for any.

A held capability may be bounded in time: ``withdraw:account/*@mon-fri 09:00-17:00
Europe/Berlin`` holds only while that calendar (``packetflow.core.calendar``) is open, on
the checking worker's clock; outside it a requirement it alone would meet is refused with
``outside-window``. A delegated token may only narrow a window.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from packetflow.core.calendar import Calendar

_OP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


class Capability(BaseModel):
    """``operation`` on ``resource``; the resource may hold wildcards when held, not required."""

    model_config = ConfigDict(frozen=True)

    operation: str
    resource: str = "*"
    window: str | None = None  # a calendar (core.calendar): held only while it is open

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Capability:
        if not _OP_RE.match(self.operation):
            raise ValueError(f"invalid capability operation {self.operation!r}")
        if not self.resource:
            raise ValueError("capability resource must not be empty (use '*')")
        if self.window is not None:  # one spelling, so equal windows compare equal
            object.__setattr__(self, "window", Calendar.parse(self.window).text())
        return self

    @property
    def calendar(self) -> Calendar | None:
        """The window this capability holds in (None: always)."""
        return None if self.window is None else Calendar.parse(self.window)

    @classmethod
    def parse(cls, text: str) -> Capability:
        """Parse ``operation:resource`` (resource defaults to ``*``)."""
        return cls(**_split(text))

    def __str__(self) -> str:
        text = f"{self.operation}:{self.resource}"
        return text if self.window is None else f"{text}@{self.window}"

    def matches_resource(self, resource: str) -> bool:
        return _pattern(self.resource).fullmatch(resource) is not None


def _split(text: str) -> dict[str, str | None]:
    body, at, window = text.strip().partition("@")
    op, sep, resource = body.strip().partition(":")
    if not op:
        raise ValueError(f"invalid capability {text!r}: expected 'operation:resource'")
    return {
        "operation": op,
        "resource": resource.strip() if sep and resource.strip() else "*",
        "window": window.strip() if at else None,
    }


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    """A resource pattern (``*``: any run without ``/``, ``**`` or a lone ``*``: anything)
    as a regular expression to match whole resources with."""
    if pattern in ("*", "**"):
        return re.compile(r".*", re.S)
    parts = []
    for token in re.split(r"(\*\*|\*)", pattern):
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts), re.S)


CapabilityLike = Capability | str


def as_capability(value: CapabilityLike) -> Capability:
    return value if isinstance(value, Capability) else Capability.parse(value)


class CapabilityHierarchy:
    """Which operations imply which: ``{"admin": ["write"], "write": ["read"]}`` is transitive.

    Roles are operations too: ``{"teller": ["deposit", "withdraw", "read"]}`` makes a held
    ``teller:account/*`` imply ``withdraw:account/7``.
    """

    def __init__(self, implies: Mapping[str, Iterable[str]] | None = None) -> None:
        self._direct: dict[str, set[str]] = {}
        for op, implied in (implies or {}).items():
            self.grant(op, *implied)

    def grant(self, operation: str, *implied: str) -> CapabilityHierarchy:
        """Declare that holding ``operation`` also grants each of ``implied``."""
        self._direct.setdefault(operation, set()).update(implied)
        self._closure.cache_clear()
        return self

    @lru_cache(maxsize=1024)  # noqa: B019 - hierarchies live as long as their topology
    def _closure(self, operation: str) -> frozenset[str]:
        seen = {operation}
        stack = [operation]
        while stack:
            for nxt in self._direct.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return frozenset(seen)

    def operations_implied_by(self, operation: str) -> frozenset[str]:
        return self._closure(operation)

    def implies(self, held: Capability, required: Capability) -> bool:
        """True when ``held`` covers ``required`` (operation implied, resource matched)."""
        if required.operation not in self._closure(held.operation):
            return False
        return held.matches_resource(required.resource)

    def missing(
        self, held: Iterable[Capability], required: Iterable[Capability]
    ) -> list[Capability]:
        """The required capabilities that no held capability implies (empty when allowed)."""
        held_list = list(held)
        return [r for r in required if not any(self.implies(h, r) for h in held_list)]

    def allows(self, held: Iterable[Capability], operation: str, resource: str) -> bool:
        """True when some held capability implies ``operation`` on ``resource``."""
        return any(
            operation in self._closure(h.operation) and h.matches_resource(resource) for h in held
        )

    def compile(self, held: tuple[Capability, ...]) -> CompiledGrants:
        """``held`` compiled for checking many requirements: what :meth:`allows` decides,
        at one regular-expression match per requirement (the hierarchy must not change
        afterwards)."""
        return CompiledGrants(held, self)

    def as_dict(self) -> dict[str, list[str]]:
        return {op: sorted(implied) for op, implied in sorted(self._direct.items())}


class CompiledGrants:
    """Held capabilities compiled for a per-record check (``CapabilityHierarchy.compile``):
    per operation, one regular expression matching every resource some held capability
    allows it on through the hierarchy, built on the first requirement of that operation."""

    __slots__ = ("_by_op", "_windowed", "held", "hierarchy")

    def __init__(self, held: tuple[Capability, ...], hierarchy: CapabilityHierarchy) -> None:
        self.held = held
        self.hierarchy = hierarchy
        self._by_op: dict[str, re.Pattern[str] | None] = {}
        self._windowed = tuple(c for c in held if c.window is not None)

    def missing(
        self, required: tuple[tuple[str, str], ...], now: float | None = None
    ) -> tuple[str, ...]:
        """The required ``op:resource`` pairs none of the held capabilities allows (at
        ``now``, epoch seconds, for those bounded by a window; None: windows not looked at,
        as if open)."""
        by_op = self._by_op
        out: tuple[str, ...] = ()
        for op, res in required:
            try:
                pattern = by_op[op]
            except KeyError:
                pattern = by_op[op] = self._compile(op)
            if (pattern is None or pattern.fullmatch(res) is None) and not self._open(
                op, res, now
            ):
                out = (*out, f"{op}:{res}")
        return out

    def _open(self, op: str, res: str, now: float | None) -> bool:
        """Whether a capability bounded by a window allows ``op`` on ``res`` at ``now``."""
        if not self._windowed:
            return False
        t = None if now is None else int(now * 1000)
        implied = self.hierarchy.operations_implied_by
        return any(
            op in implied(c.operation)
            and c.matches_resource(res)
            and (t is None or c.calendar.contains(t))  # type: ignore[union-attr]
            for c in self._windowed
        )

    def outside(self, missing: tuple[str, ...]) -> tuple[Capability, ...]:
        """The window-bounded capabilities that would allow every one of ``missing``
        (``op:resource`` pairs) at another time: empty unless that is why they are."""
        if not self._windowed or not missing:
            return ()
        implied = self.hierarchy.operations_implied_by
        pairs = [m.split(":", 1) for m in missing]
        covering = tuple(
            c for c in self._windowed
            if any(op in implied(c.operation) and c.matches_resource(res) for op, res in pairs)
        )  # fmt: skip
        allowed = all(
            any(op in implied(c.operation) and c.matches_resource(res) for c in covering)
            for op, res in pairs
        )
        return covering if allowed else ()

    def _compile(self, op: str) -> re.Pattern[str] | None:
        implied = self.hierarchy.operations_implied_by
        patterns = sorted(
            {
                _pattern(c.resource).pattern
                for c in self.held
                if c.window is None and op in implied(c.operation)
            }
        )
        if not patterns:
            return None
        return re.compile("|".join(f"(?:{p})" for p in patterns), re.S)
