"""Intents: typed, versioned requests for something to be done.

An intent is a pydantic model. Its class declares a stable type name (what travels on the
wire), a schema version, the capabilities a sender must hold, and the field that keys it::

    class Withdraw(Intent, type_name="orders.Withdraw", requires=["withdraw:account/{account}"],
                   key="account"):
        account: str
        amount: int

``{field}`` in a required capability's resource is filled from the intent, so a token for
``withdraw:account/a1`` covers ``Withdraw(account="a1")`` and nothing else.

An intent that only reactors emit for other reactors (the second leg of a transfer, a ledger
entry) is declared ``internal=True``: workers authenticate it with a MAC under a secret only
workers hold, so nobody who can merely produce to a topic can forge one. Numbers are finite
(``NaN`` and ``Infinity`` are not JSON and are refused).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from packetflow.core.capability import Capability, CapabilityLike, as_capability


class Intent(BaseModel):
    """Base class of every intent type."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    intent_type: ClassVar[str] = "Intent"
    intent_version: ClassVar[int] = 1
    required_capabilities: ClassVar[tuple[Capability, ...]] = ()
    key_field: ClassVar[str | None] = None
    # emitted only by reactors and the engine; accepted only with a worker's MAC (pf-mac)
    internal: ClassVar[bool] = False
    # (operation, resource template, whether it has {placeholders}), computed once per class
    _requirement_templates: ClassVar[tuple[tuple[str, str, bool], ...]] = ()

    def __init_subclass__(
        cls,
        *,
        type_name: str | None = None,
        version: int | None = None,
        requires: Iterable[CapabilityLike] | None = None,
        key: str | None = None,
        internal: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.intent_type = type_name or cls.__name__
        if version is not None:
            if version < 1:
                raise ValueError(f"{cls.__name__}: version must be >= 1")
            cls.intent_version = version
        if requires is not None:
            cls.required_capabilities = tuple(as_capability(c) for c in requires)
            cls._requirement_templates = tuple(
                (c.operation, c.resource, "{" in c.resource) for c in cls.required_capabilities
            )
        if key is not None:
            cls.key_field = key
        if internal is not None:
            cls.internal = internal

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.key_field is not None and cls.key_field not in cls.model_fields:
            raise TypeError(f"{cls.__name__}: key={cls.key_field!r} is not a field")
        for cap in cls.required_capabilities:
            for name in _placeholders(cap.resource):
                if name not in cls.model_fields:
                    raise TypeError(
                        f"{cls.__name__}: required capability {cap} names unknown field {name!r}"
                    )

    def partition_key(self) -> str | None:
        """The record key this intent is sent with by default (its ``key`` field)."""
        if self.key_field is None:
            return None
        value = getattr(self, self.key_field)
        return None if value is None else str(value)

    def capabilities_required(self) -> tuple[Capability, ...]:
        """The required capabilities with ``{field}`` placeholders filled from this intent."""
        return tuple(Capability(operation=op, resource=res) for op, res in self.requirements())

    def requirements(self) -> tuple[tuple[str, str], ...]:
        """``(operation, resource)`` pairs this intent needs: the engine's per-record check."""
        templates = self._requirement_templates
        if not templates:
            return ()
        values = self.__dict__
        if len(templates) == 1:  # the common case, without a generator
            op, res, templated = templates[0]
            return ((op, res.format_map(values) if templated else res),)
        return tuple(
            (op, res.format_map(values) if templated else res) for op, res, templated in templates
        )


FieldOf = str | Callable[["Intent"], Any]


def field_getter(field: FieldOf, purpose: str) -> Callable[[Intent], Any]:
    """``field`` (a field name, or already a function of the intent) as a function of the
    intent; a missing field says what it was wanted for (``purpose``)."""
    if callable(field):
        return field
    name = field

    def get(intent: Intent) -> Any:
        try:
            return getattr(intent, name)
        except AttributeError:
            raise AttributeError(
                f"{type(intent).intent_type} has no field {name!r} to {purpose}"
            ) from None

    return get


def _placeholders(resource: str) -> list[str]:
    import string

    return [name for _, name, _, _ in string.Formatter().parse(resource) if name]


def intent_types_of(target: Any) -> tuple[type[Intent], ...]:
    """The concrete intent classes named by a class, a union (``A | B``) or an Annotated union."""
    origin = get_origin(target)
    if origin is typing.Annotated:
        return intent_types_of(get_args(target)[0])
    if origin in (Union, types.UnionType):
        out: list[type[Intent]] = []
        for arg in get_args(target):
            out.extend(intent_types_of(arg))
        return tuple(out)
    if isinstance(target, type) and issubclass(target, Intent):
        if target is Intent:
            raise TypeError("register a concrete Intent subclass or a union of them")
        return (target,)
    if isinstance(target, (tuple, list)):
        out = []
        for arg in target:
            out.extend(intent_types_of(arg))
        return tuple(out)
    raise TypeError(f"not an intent type or union of intent types: {target!r}")
