"""Durable reminders: an actor asks to be sent a :class:`Reminder` later, once or every so
often, and gets it even after restarts and rebalances (the engine's durable timers).

``remind("name", after=30)`` or ``remind("name", every=60, after=60)``; ``forget("name")``
cancels; setting a name again replaces it. After downtime a periodic reminder's missed
firings follow its ``misfire`` policy (a burst of every missed firing is the complaint this
avoids): ``"coalesce"`` (default) fires once and says how many were missed, ``"fire_all"``
fires each missed one (at most ``FIRE_ALL_LIMIT``), ``"skip"`` fires none of them and waits
for the next one on schedule. The reminder is handled in the context of the message that
set it.

``timer("name", after=..., every=...)`` is the in-memory kind (Orleans' timers): the same
:class:`Reminder` (``durable=False``), at no cost to the store, but it dies with the
activation: when the actor is passivated, its partition moves or the worker stops, and it
does not count as activity that keeps the actor in memory. ``forget`` cancels either kind.
Pure declarations: the runtime is in ``agent.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from packetflow.core.effects import Effect
from packetflow.core.intent import Intent

Misfire = Literal["coalesce", "fire_all", "skip"]
MISFIRES = ("coalesce", "fire_all", "skip")
FIRE_ALL_LIMIT = 100  # missed firings a "fire_all" reminder sends at most, at once


@dataclass(frozen=True, slots=True)
class Remind(Effect):
    """Set (or replace) the actor's reminder ``name`` (see :func:`remind`)."""

    name: str
    after: float
    every: float | None = None
    misfire: Misfire = "coalesce"


@dataclass(frozen=True, slots=True)
class StartTimer(Effect):
    """Set (or replace) the actor's in-memory timer ``name`` (see :func:`timer`)."""

    name: str
    after: float
    every: float | None = None


@dataclass(frozen=True, slots=True)
class Forget(Effect):
    """Cancel the actor's reminder or timer ``name`` (nothing if it has none)."""

    name: str


def remind(
    name: str, *, after: float, every: float | None = None, misfire: Misfire = "coalesce"
) -> Remind:
    """Send this actor a :class:`Reminder` ``after`` seconds from now, then every ``every``
    seconds if given, whatever happens to the worker meanwhile (see the module docstring)."""
    if after < 0 or (every is not None and every <= 0):
        raise ValueError("a reminder needs after >= 0 and every > 0")
    if misfire not in MISFIRES:
        raise ValueError(f"misfire must be one of {', '.join(MISFIRES)}, not {misfire!r}")
    return Remind(name, after, every, misfire)


def timer(name: str, *, after: float, every: float | None = None) -> StartTimer:
    """Send this actor a :class:`Reminder` (``durable=False``) ``after`` seconds from now,
    then every ``every`` seconds, for as long as it stays in memory on this worker."""
    if after < 0 or (every is not None and every <= 0):
        raise ValueError("a timer needs after >= 0 and every > 0")
    return StartTimer(name, after, every)


def forget(name: str) -> Forget:
    """Cancel this actor's reminder or timer ``name``."""
    return Forget(name)


class Reminder(Intent, type_name="packetflow.actors.Reminder", key="actor", internal=True):
    """An actor's reminder is due (sent by the engine to the actor that set it)."""

    actor: str  # the actor's id
    name: str
    scheduled: int  # when it was due, ms since the epoch
    missed: int = 0  # earlier firings that did not happen (downtime), per its misfire policy
    durable: bool = True  # False: an in-memory timer's (timer(...))


def firings(due: int, now: int, every: int | None, misfire: Misfire) -> tuple[list[int], int, int]:
    """For a reminder due at ``due`` (ms) seen at ``now``: the scheduled times to fire now,
    how many were missed (not fired), and the next due time (0: none, a one-off)."""
    if every is None:
        return [due], 0, 0
    late = max(0, (now - due) // every)  # whole periods past the due time
    nxt = due + (late + 1) * every
    if misfire == "fire_all":
        times = [due + i * every for i in range(late + 1)]
        kept = times[-FIRE_ALL_LIMIT:]
        return kept, len(times) - len(kept), nxt
    if misfire == "skip" and late:
        return [], late + 1, nxt
    return [due + late * every], late, nxt
