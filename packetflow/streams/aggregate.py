"""Aggregations: how a window folds the intents that fall into it.

An :class:`Aggregate` is ``init() -> acc``, ``add(acc, value) -> acc``, optionally
``merge(acc, acc) -> acc`` (session and sliding windows need it) and ``result(acc)``. The
value added is the intent's ``field`` (a name or a function of the intent), or the intent
itself. Accumulators are kept in the window's changelog as JSON, so they must be JSON
values: numbers, strings, lists, dicts, None (lists, not tuples). Write your own or use the
ready ones: :func:`count`, :func:`sum`, :func:`min`, :func:`max`, :func:`mean`,
:func:`last`, :func:`collect`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packetflow.core.intent import Intent, field_getter

Field = str | Callable[[Intent], Any] | None


@dataclass(frozen=True)
class Aggregate:
    """A fold over the intents of one window."""

    init: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any] | None = None
    result: Callable[[Any], Any] | None = None
    field: Field = None
    name: str = "aggregate"

    def value_of(self) -> Callable[[Intent], Any]:
        """The function that picks what :attr:`add` receives from an intent."""
        if self.field is None:
            return _identity
        return field_getter(self.field, f"aggregate ({self.name})")

    def finish(self, acc: Any) -> Any:
        return acc if self.result is None else self.result(acc)

    def describe(self) -> str:
        field = self.field
        if field is None:
            return self.name
        label = field if isinstance(field, str) else getattr(field, "__name__", "fn")
        return f"{self.name}({label})"


def _identity(intent: Intent) -> Any:
    return intent


def count() -> Aggregate:
    """How many intents."""
    return Aggregate(
        init=lambda: 0, add=lambda acc, _: acc + 1, merge=lambda a, b: a + b, name="count"
    )


def sum(field: Field) -> Aggregate:
    """The sum of ``field``."""
    return Aggregate(
        init=lambda: 0, add=lambda acc, v: acc + v, merge=lambda a, b: a + b,
        field=field, name="sum",
    )  # fmt: skip


def _pick(choose: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def add(acc: Any, value: Any) -> Any:
        return value if acc is None else choose(acc, value)

    return add


def min(field: Field) -> Aggregate:
    """The smallest ``field`` (None for an empty window)."""
    pick = _pick(builtins.min)
    return Aggregate(init=lambda: None, add=pick, merge=pick, field=field, name="min")


def max(field: Field) -> Aggregate:
    """The largest ``field``."""
    pick = _pick(builtins.max)
    return Aggregate(init=lambda: None, add=pick, merge=pick, field=field, name="max")


def mean(field: Field) -> Aggregate:
    """The arithmetic mean of ``field`` (accumulated as ``[sum, count]``)."""
    return Aggregate(
        init=lambda: [0, 0],
        add=lambda acc, v: [acc[0] + v, acc[1] + 1],
        merge=lambda a, b: [a[0] + b[0], a[1] + b[1]],
        result=lambda acc: acc[0] / acc[1] if acc[1] else None,
        field=field,
        name="mean",
    )


def last(field: Field) -> Aggregate:
    """The ``field`` of the latest intent (in arrival order)."""
    return Aggregate(
        init=lambda: None, add=lambda _, v: v, merge=lambda a, b: b if b is not None else a,
        field=field, name="last",
    )  # fmt: skip


def _append(acc: list[Any], value: Any) -> list[Any]:
    acc.append(value)  # the window owns its accumulator: no copy per intent
    return acc


def collect(field: Field) -> Aggregate:
    """Every ``field``, as a list in arrival order."""
    return Aggregate(
        init=list, add=_append, merge=lambda a, b: [*a, *b], field=field, name="collect"
    )
