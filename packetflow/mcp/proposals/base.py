"""What every proposal provider shares: :class:`Proposal` (an intent type and the field
values read from a text, with what could not be filled), :class:`Provider` (the plug-in
protocol) and :func:`proposable_types` (the types a topology takes from outside).

A proposal is advice, never authority: :meth:`Proposal.build` only validates it against
the intent model; publishing it goes through the same capability checks as anything else.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from packetflow.core.intent import Intent
from packetflow.engine.topology import Topology


class ProposalError(ValueError):
    """A proposal that does not make an intent: the message is one line naming what is
    missing or invalid."""


TypesLike = Topology | Mapping[str, type[Intent]] | Iterable[type[Intent]]


@dataclass(frozen=True)
class Proposal:
    """An intent proposed for ``text``: its wire type name (None: no type fits), the field
    values found (``fields``), the required fields that could not be filled (``missing``),
    remarks on how it was read (``notes``) and who proposed it (``provider``)."""

    text: str
    intent_type: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    provider: str = ""

    @property
    def complete(self) -> bool:
        """Whether it names a type and every required field has a value."""
        return self.intent_type is not None and not self.missing

    def build(self, types: TypesLike) -> Intent:
        """The intent, validated by its pydantic model; :class:`ProposalError` otherwise.

        ``types``: a topology (its intent types), a mapping of wire names to classes, or
        the classes themselves.
        """
        if self.intent_type is None:
            why = f": {self.notes[0]}" if self.notes else ""
            raise ProposalError(f"no intent type matches the text{why}")
        cls = _lookup(types, self.intent_type)
        if self.missing:
            raise ProposalError(
                f"could not fill {', '.join(self.missing)} for {self.intent_type} from the text"
            )
        try:
            return cls.model_validate(self.fields)
        except ValidationError as exc:
            raise ProposalError(f"{self.intent_type}: {first_error(exc)}") from None

    def as_json(self) -> dict[str, Any]:
        """The proposal as JSON-ready data (datetimes as ISO strings, decimals as strings)."""
        return {
            "text": self.text,
            "intent_type": self.intent_type,
            "fields": to_jsonable_python(self.fields),
            "missing": list(self.missing),
            "notes": list(self.notes),
            "provider": self.provider,
        }


def first_error(exc: ValidationError) -> str:
    """A pydantic validation error in one line: the first problem and where."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "value"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more)" if more else ""
    return f"{loc}: {first['msg']}{tail}"


def _lookup(types: TypesLike, name: str) -> type[Intent]:
    if isinstance(types, Topology):
        by_name = types.intent_types
    elif isinstance(types, Mapping):
        by_name = dict(types)
    else:
        by_name = {t.intent_type: t for t in types}
    if name in by_name:
        return by_name[name]
    by_class = [t for t in by_name.values() if t.__name__ == name]
    if len(by_class) == 1:
        return by_class[0]
    known = ", ".join(sorted(by_name)) or "none"
    raise ProposalError(f"unknown intent type {name!r} (known: {known})")


@runtime_checkable
class Provider(Protocol):
    """Turns a text into a proposed intent of one of ``types`` (a plug-in: offline,
    a model through pydantic-ai, ...). ``name`` says which, in proposals and messages."""

    name: str

    async def propose(self, text: str, types: Sequence[type[Intent]]) -> Proposal:
        """The intent ``text`` asks for, honestly incomplete where the text says nothing."""
        ...


def proposable_types(topology: Topology) -> list[type[Intent]]:
    """The intent types ``topology`` accepts from outside: consumed by some reactor or
    agent and not internal, sorted by wire type name."""
    consumed: dict[str, type[Intent]] = {}
    for spec in topology.consumers():
        for cls in spec.intent_types:
            consumed[cls.intent_type] = cls
    return [consumed[name] for name in sorted(consumed) if not consumed[name].internal]


def own_doc(cls: type) -> str:
    """``cls``'s own docstring, cleaned ("" when it has none: never a base class's)."""
    doc = cls.__dict__.get("__doc__")
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""
