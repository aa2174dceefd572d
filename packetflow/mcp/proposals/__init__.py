"""Natural language to a proposed intent, through pluggable providers.

``base`` holds what they share (:class:`Proposal`, :class:`ProposalError`, the
:class:`Provider` protocol, :func:`proposable_types`); ``offline`` reads the text with no
model, guided by the intent types' schemas; ``models`` asks a language model through
pydantic-ai (imported only when that provider is chosen). :func:`provider_from` picks one
by name (``offline``, ``pydantic-ai:<model>``; default ``$PACKETFLOW_NL_PROVIDER``).

A proposal only says what the text seems to ask for: publishing it is checked like any
other intent. Imports ``packetflow.core`` and ``packetflow.engine`` only.
"""

from __future__ import annotations

import os

from packetflow.mcp.proposals.base import (
    Proposal,
    ProposalError,
    Provider,
    proposable_types,
)
from packetflow.mcp.proposals.models import ModelProvider
from packetflow.mcp.proposals.offline import OfflineProvider

ENV = "PACKETFLOW_NL_PROVIDER"
MODEL_PREFIX = "pydantic-ai:"


def provider_from(spec: str | None = None) -> Provider:
    """The provider ``spec`` names: ``offline`` (or None: ``$PACKETFLOW_NL_PROVIDER``,
    else offline) or ``pydantic-ai:<model>`` (``pydantic-ai:openai:gpt-4o``); a
    ``ValueError`` saying what is wrong otherwise."""
    if spec is None:
        spec = os.environ.get(ENV) or "offline"
    spec = spec.strip()
    if spec == "offline":
        return OfflineProvider()
    if spec.startswith(MODEL_PREFIX):
        model = spec.removeprefix(MODEL_PREFIX).strip()
        if not model:
            raise ValueError(f"provider {spec!r}: name the model, e.g. pydantic-ai:openai:gpt-4o")
        try:
            return ModelProvider(model)
        except ImportError as exc:
            raise ValueError(
                f"provider {spec!r} needs pydantic-ai: pip install 'packetflow[ai]' ({exc})"
            ) from exc
        except Exception as exc:  # an unknown model, a missing API key
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"provider {spec!r}: {message}") from exc
    raise ValueError(
        f"unknown proposal provider {spec!r}: use offline or pydantic-ai:<model> "
        "(e.g. pydantic-ai:openai:gpt-4o)"
    )


__all__ = [
    "ModelProvider",
    "OfflineProvider",
    "Proposal",
    "ProposalError",
    "Provider",
    "proposable_types",
    "provider_from",
]
