"""Start and stop as named states: what workers, clients and services share.

Like httpx's client states and aiokafka's ``start``/``stop``: a component is ``new``, then
``starting``, ``running``, ``stopping``, ``stopped``. Starting twice is refused with a clear
message; stopping is idempotent; and whatever a failed start had opened is closed again, in
reverse order, before the error leaves :meth:`Lifecycle.start` (each resource is pushed onto
an ``AsyncExitStack`` as it is opened).
"""

from __future__ import annotations

import contextlib
import enum
from types import TracebackType
from typing import Self


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Lifecycle:
    """A component that opens resources in :meth:`_open` and closes them when it stops."""

    def __init__(self) -> None:
        self.lifecycle = State.NEW
        self._resources = contextlib.AsyncExitStack()

    async def start(self) -> None:
        """Open everything; on failure, close what was opened and raise."""
        if self.lifecycle is not State.NEW:
            raise RuntimeError(
                f"{type(self).__name__} cannot start: it is {self.lifecycle.value} "
                "(a stopped one is not restarted: make a new one)"
            )
        self.lifecycle = State.STARTING
        try:
            await self._open(self._resources)
        except BaseException:
            self.lifecycle = State.STOPPING
            try:
                await self._resources.aclose()
            finally:
                self.lifecycle = State.STOPPED
            raise
        self.lifecycle = State.RUNNING

    async def stop(self) -> None:
        """Finish gracefully (:meth:`_close`), then close every resource; idempotent."""
        if self.lifecycle is State.NEW:
            self.lifecycle = State.STOPPED
            return
        if self.lifecycle is not State.RUNNING:
            return  # stopping or stopped already (or a start still failing)
        self.lifecycle = State.STOPPING
        try:
            await self._close()
        finally:
            try:
                await self._resources.aclose()
            finally:
                self.lifecycle = State.STOPPED

    @property
    def running(self) -> bool:
        return self.lifecycle is State.RUNNING

    async def _open(self, resources: contextlib.AsyncExitStack) -> None:
        """Open the component's resources, pushing how to close each onto ``resources``."""

    async def _close(self) -> None:
        """The graceful part of stopping, while every resource is still open."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
