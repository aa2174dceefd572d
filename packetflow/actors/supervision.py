"""What happens to an actor whose handler raised: the supervision policy of its type.

``resume()`` keeps the actor's state and sets the message aside; ``stop()`` sets it and every
later message of that actor aside; ``restart(...)`` (the default) keeps the message and
tries it again after a backoff, holding the actor's later messages back meanwhile (in its
durable stash, so the partition's offsets move on and its other actors keep flowing), and
gives up on the message after ``max_restarts`` failures within ``within`` seconds, or, when
the actor type names a supervisor, escalates it. ``escalate()`` hands every failure to the
supervisor at once (see ``supervisors.py``). Pure: no I/O, no engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["restart", "resume", "stop", "escalate"]


@dataclass(frozen=True)
class Supervision:
    """An actor type's answer to a failed message (see the module docstring)."""

    strategy: Strategy = "restart"
    max_restarts: int = 3  # failures within ``within`` before the message is given up on
    within: float = 60.0  # seconds
    backoff: tuple[float, float] = (0.1, 10.0)  # first and longest wait, seconds
    jitter: float = 0.2  # each wait is up to this share shorter, at random

    def __post_init__(self) -> None:
        if self.strategy not in ("restart", "resume", "stop", "escalate"):
            raise ValueError(
                f"strategy must be restart, resume, stop or escalate, not {self.strategy!r}"
            )
        if self.max_restarts < 0 or self.within <= 0:
            raise ValueError("max_restarts must be >= 0 and within > 0")
        first, longest = self.backoff
        if not 0 < first <= longest:
            raise ValueError("backoff must be (first, longest) with 0 < first <= longest")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def delay(self, attempt: int, seed: bytes = b"") -> float:
        """Seconds to wait before try ``attempt`` (1: after the first failure): doubling
        from the first wait up to the longest, less a jitter that is random but the same
        for the same ``seed`` (the actor's id) and attempt, so tests see the same waits."""
        first, longest = self.backoff
        wait = min(longest, first * 2 ** max(attempt - 1, 0))
        rng = random.Random(seed + attempt.to_bytes(4, "big"))
        return wait * (1 - self.jitter * rng.random())


def restart(
    *,
    max_restarts: int = 3,
    within: float = 60.0,
    backoff: tuple[float, float] = (0.1, 10.0),
    jitter: float = 0.2,
) -> Supervision:
    """Try the failed message again after a backoff; the actor's later messages wait."""
    return Supervision("restart", max_restarts, within, backoff, jitter)


def resume() -> Supervision:
    """Keep the actor's state and go on; the failed message is set aside."""
    return Supervision("resume")


def stop() -> Supervision:
    """Set the failed message and every later message of the actor aside."""
    return Supervision("stop")


def escalate() -> Supervision:
    """Hand the failure to the actor type's supervisor (``actor(..., supervisor=...)``);
    the actor's messages wait in its stash until the supervisor decides."""
    return Supervision("escalate")
