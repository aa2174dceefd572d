"""Following a topic in the background: read what arrives, for as long as the reader lives,
through a broker's hiccups (said, then tried again a second later)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from packetflow.engine.transport.base import Follower, Record


async def follow_forever(
    follower: Follower,
    apply: Callable[[list[Record]], None],
    what: str,
    log: logging.Logger,
    *,
    poll: float = 0.5,
) -> None:
    """Hand every batch ``follower`` reads to ``apply`` until cancelled; an error is logged
    as "following <what>: ..." and the follower tried again a second later."""
    while True:
        try:
            apply(await follower.poll(poll))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep following: a broker hiccup must not stop this
            log.warning("following %s: %s: %s", what, type(exc).__name__, exc)
            await asyncio.sleep(1.0)


async def stop_following(task: asyncio.Task[None] | None, follower: Follower | None) -> None:
    """Cancel the task that follows (see :func:`follow_forever`) and stop its follower;
    either may be None (never started)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if follower is not None:
        await follower.stop()
