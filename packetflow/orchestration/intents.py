"""What sagas send: a :class:`SagaTransition` on the saga's transitions topic for every step
of its progress (so an instance's history can be replayed), and a :class:`SagaOutcome` on its
outcome topic when it ends. Both internal: only workers send them (sealed), anyone may
consume them."""

from __future__ import annotations

from typing import Any, Literal

from packetflow.core.intent import Intent

Status = Literal["running", "compensating", "completed", "compensated", "failed"]
Ending = Literal["completed", "compensated", "failed"]
FINAL: tuple[Ending, ...] = ("completed", "compensated", "failed")
Event = Literal[
    "started", "step-started", "step-completed", "step-failed", "step-skipped",
    "compensating", "compensation-started", "compensation-completed", "compensation-failed",
    "completed", "compensated", "failed",
]  # fmt: skip


class SagaTransition(
    Intent, type_name="packetflow.orchestration.SagaTransition", key="saga_id", internal=True
):
    """One transition of a saga instance: ``event`` (of ``step``), at ``at`` (ms), with a
    ``reason`` code and ``detail`` for failures."""

    saga: str
    saga_id: str
    event: Event
    step: str | None = None
    reason: str | None = None
    detail: str | None = None
    at: int


class SagaOutcome(
    Intent, type_name="packetflow.orchestration.SagaOutcome", key="saga_id", internal=True
):
    """How a saga instance ended: ``completed`` (every step did), ``compensated`` (a step
    failed: ``step``, ``reason``, ``error``; every completed step was undone) or ``failed``
    (some compensation failed too: ``compensations_failed`` names them). ``results`` holds
    each completed step's result as JSON (type and data)."""

    saga: str
    saga_id: str
    status: Ending
    step: str | None = None
    reason: str | None = None
    error: str | None = None
    compensated: list[str] = []
    compensations_failed: list[str] = []
    results: dict[str, Any] = {}
