"""Reactors: plain functions that turn an intent (plus context and keyed state) into effects.

Two signatures, chosen by whether the reactor declares state::

    def stateless(intent, ctx) -> Effects
    def stateful(intent, ctx, state) -> tuple[new_state, Effects]

Either may be ``async def``. State is keyed by the record key and committed only when the
reactor returns normally; an exception leaves the old state in place. Return a new state
rather than changing the given one: it is not copied (that would cost every record), so an
in-place change made before an exception would survive.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

from packetflow.core.backpressure import Backpressure
from packetflow.core.intent import Intent

S = TypeVar("S")


@dataclass(frozen=True)
class StateSpec(Generic[S]):
    """How a reactor's state starts, and how it is written to and read from its changelog."""

    initial: Callable[[], S]
    encode: Callable[[S], bytes]
    decode: Callable[[bytes], S]
    type_name: str

    @classmethod
    def of(cls, state: Any) -> StateSpec[Any]:
        """From a pydantic model class (default instance to start), or any JSON-able value."""
        if isinstance(state, StateSpec):
            return state
        if isinstance(state, type) and issubclass(state, BaseModel):
            model: type[BaseModel] = state
            return StateSpec(
                initial=model,
                encode=lambda s: s.model_dump_json().encode(),
                decode=model.model_validate_json,
                type_name=model.__name__,
            )
        if callable(state):
            factory: Callable[[], Any] = state
        else:
            initial_value = orjson.dumps(state)  # validates JSON-ability now, not at run time

            def factory() -> Any:
                return orjson.loads(initial_value)

        return StateSpec(
            initial=factory,
            encode=orjson.dumps,
            decode=orjson.loads,
            type_name=type(factory()).__name__,
        )


@dataclass(frozen=True)
class ReactorSpec:
    """A registered reactor: what it consumes and how it is called."""

    name: str
    fn: Callable[..., Any]
    intent_types: tuple[type[Intent], ...]
    topic: str
    state: StateSpec[Any] | None
    is_async: bool
    description: str = ""
    emits: tuple[type[Intent], ...] = ()
    # run apart from the batch loop behind a bounded buffer (see core.backpressure)
    backpressure: Backpressure | None = None
    # takes intent types that require nothing and are not internal, from anyone
    public: bool = False
    # async reactors: seconds one intent may take (None: the topology's reactor_timeout)
    timeout: float | None = None

    @classmethod
    def build(
        cls,
        fn: Callable[..., Any],
        intent_types: tuple[type[Intent], ...],
        topic: str,
        state: Any = None,
        name: str | None = None,
        emits: tuple[type[Intent], ...] = (),
        backpressure: Backpressure | None = None,
        public: bool = False,
        timeout: float | None = None,
    ) -> ReactorSpec:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        expected = 3 if state is not None else 2
        if len(params) != expected:
            shape = "(intent, ctx, state)" if state is not None else "(intent, ctx)"
            raise TypeError(
                f"reactor {fn.__name__} must take {shape}, got {len(params)} positional params"
            )
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        return cls(
            name=name or fn.__name__,
            fn=fn,
            intent_types=intent_types,
            topic=topic,
            state=StateSpec.of(state) if state is not None else None,
            is_async=inspect.iscoroutinefunction(fn),
            description=doc[0] if doc else "",
            emits=emits,
            backpressure=backpressure,
            public=public,
            timeout=timeout,
        )

    @property
    def stateful(self) -> bool:
        return self.state is not None
