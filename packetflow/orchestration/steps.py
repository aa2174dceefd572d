"""A saga's steps as data: what each does, how it is undone and how long it may take, and
the :class:`Instance` view the steps' small functions build their intents from.

Steps are declarations (no I/O): :func:`send` (a request to a reactor or actor, answered by
its reply), :func:`call_tool` (an MCP tool through the engine's ``McpCall`` effect),
:func:`sleep` (a duration or the next cron instant), :func:`wait_for` (an intent sent to the
saga, keyed by the instance's id, that matches a predicate) and :func:`parallel` (branches
run at once and joined: all must succeed). A plan is a list of stages, each a list of
branches, each a list of steps; the agent keeps only a position in it and the results so
far, so the plan must not change under running instances except by adding stages at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

from cronsim import CronSim, CronSimError

from packetflow.core.calendar import zone
from packetflow.core.intent import Intent
from packetflow.engine.mcpcall import DEFAULT_TIMEOUT

DEFAULT_STEP_TIMEOUT = 30.0  # s: a send step with no answer in this long fails (timeout)


@dataclass(frozen=True)
class Instance:
    """One running saga as its steps' functions see it: its id (the start intent's key),
    the start intent, who started it, and the results of the steps completed so far (by step
    name: the reply, the ``McpResult`` or the intent waited for; None for a sleep or a step
    skipped).

    A step whose outcome is unknown (no answer in time, an MCP call that timed out or whose
    outcome is unknown) may have done what it asked, so it is compensated too, but it has no
    result: ``results.get(name)`` is None and its name is in ``uncertain``. A compensation
    should therefore derive what it undoes from ``id`` and ``start`` (deterministic ids: a
    booking named after the trip), not from ``results`` alone, and be idempotent (it may
    undo what never happened)."""

    id: str
    start: Any  # the start intent (its declared type)
    principal: str | None
    results: Mapping[str, Any]
    started: datetime
    uncertain: frozenset[str] = frozenset()  # steps that failed not knowing if they happened


Build: TypeAlias = Callable[[Instance], Intent]
Arguments: TypeAlias = Callable[[Instance], Mapping[str, Any]]
Condition: TypeAlias = Callable[[Instance], bool]


@dataclass(frozen=True)
class Step:
    """A step: its name (unique in the saga: its result's key), an optional condition
    (``when``: the step runs only if it holds when its turn comes, else it is skipped) and
    an optional compensation (an intent builder sent once without waiting, or a ``send`` /
    ``call_tool`` step whose answer is awaited)."""

    name: str
    when: Condition | None = field(default=None, kw_only=True)
    compensate: Build | Send | CallTool | None = field(default=None, kw_only=True)

    def deadline(self, now: int) -> int | None:
        """When (ms) this step, started at ``now``, times out (or ends, for a sleep)."""
        return None


@dataclass(frozen=True)
class Send(Step):
    """Send the intent ``build`` makes as a request; its reply (of a type in ``expect``, if
    given) completes the step, a ``Refused`` (denied, dead-lettered) or another type fails it."""

    build: Build = field(kw_only=True)
    expect: tuple[type[Intent], ...] = field(default=(), kw_only=True)
    timeout: float = field(default=DEFAULT_STEP_TIMEOUT, kw_only=True)
    topic: str | None = field(default=None, kw_only=True)  # default: the type's route

    def deadline(self, now: int) -> int | None:
        return now + int(self.timeout * 1000)


@dataclass(frozen=True)
class CallTool(Step):
    """Call ``tool`` of the declared MCP server ``server`` with ``arguments(instance)``: an
    ``ok`` result completes the step, any other outcome fails it."""

    server: str = field(kw_only=True)
    tool: str = field(kw_only=True)
    arguments: Arguments = field(kw_only=True)
    timeout: float = field(default=DEFAULT_TIMEOUT, kw_only=True)

    # the McpResult always comes (``timeout`` at worst); this is the saga's safety net
    GRACE = 10.0

    def deadline(self, now: int) -> int | None:
        return now + int((self.timeout + self.GRACE) * 1000)


@dataclass(frozen=True)
class Sleep(Step):
    """Wait ``seconds``, or until the next instant of ``cron`` in zone ``tz``."""

    seconds: float | None = field(default=None, kw_only=True)
    cron: str | None = field(default=None, kw_only=True)
    tz: str = field(default="UTC", kw_only=True)

    def deadline(self, now: int) -> int | None:
        if self.seconds is not None:
            return now + int(self.seconds * 1000)
        assert self.cron is not None
        start = datetime.fromtimestamp(now / 1000, UTC).astimezone(zone(self.tz))
        try:
            return int(next(CronSim(self.cron, start)).timestamp() * 1000)
        except StopIteration:  # cronsim gives up after 50 years without a match
            return None


@dataclass(frozen=True)
class WaitFor(Step):
    """Wait for an intent of type ``intent`` sent to the saga's topic keyed by the
    instance's id, for which ``where(instance, it)`` holds; fails after ``timeout`` s (None:
    never)."""

    intent: type[Intent] = field(kw_only=True)
    where: Callable[[Instance, Any], bool] | None = field(default=None, kw_only=True)
    timeout: float | None = field(default=None, kw_only=True)

    def deadline(self, now: int) -> int | None:
        return None if self.timeout is None else now + int(self.timeout * 1000)


@dataclass(frozen=True)
class Parallel:
    """Branches run at once and joined: the stage is done when every branch is; one failing
    makes the saga wait for the others' steps in flight, then compensate all that completed."""

    branches: tuple[tuple[Step, ...], ...]


StepLike: TypeAlias = Step | Parallel


def _timeout(value: float | None, what: str) -> float | None:
    if value is not None and value <= 0:
        raise ValueError(f"{what}: timeout must be positive, not {value}")
    return value


def send(
    name: str,
    build: Build,
    *,
    expect: type[Intent] | tuple[type[Intent], ...] = (),
    timeout: float = DEFAULT_STEP_TIMEOUT,
    compensate: Build | Send | CallTool | None = None,
    topic: str | None = None,
    when: Condition | None = None,
) -> Send:
    """Send ``build(instance)`` as a request (to its type's topic, or ``topic``) with the
    saga's kept authority, and wait up to ``timeout`` s for its reply."""
    _timeout(timeout, f"step {name}")
    expected = expect if isinstance(expect, tuple) else (expect,)
    return Send(name, build=build, expect=expected, timeout=timeout, compensate=compensate,
                topic=topic, when=when)  # fmt: skip


def call_tool(
    name: str,
    server: str,
    tool: str,
    arguments: Arguments,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    compensate: Build | Send | CallTool | None = None,
    when: Condition | None = None,
) -> CallTool:
    """Call MCP ``tool`` on ``server`` (declared with ``mcp_servers``) with
    ``arguments(instance)``; needs ``call:mcp/<server>/<tool>`` of the saga's authority."""
    _timeout(timeout, f"step {name}")
    return CallTool(name, server=server, tool=tool, arguments=arguments, timeout=timeout,
                    compensate=compensate, when=when)  # fmt: skip


def sleep(
    name: str,
    *,
    seconds: float = 0.0,
    minutes: float = 0.0,
    hours: float = 0.0,
    days: float = 0.0,
    cron: str | None = None,
    tz: str = "UTC",
    when: Condition | None = None,
) -> Sleep:
    """Wait a duration (the sum of what is given), or until ``cron``'s next instant in
    ``tz`` (an IANA zone; cronsim's syntax)."""
    total = seconds + 60 * minutes + 3600 * hours + 86400 * days
    if cron is not None:
        if total:
            raise ValueError(f"step {name}: a duration or a cron expression, not both")
        zone(tz)
        try:
            CronSim(cron, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"step {name}: cron {cron!r}: {exc}") from None
        return Sleep(name, cron=cron, tz=tz, when=when)
    if total <= 0:
        raise ValueError(f"step {name}: sleep for a positive duration, or until a cron instant")
    return Sleep(name, seconds=total, when=when)


def wait_for(
    name: str,
    intent: type[Intent],
    *,
    where: Callable[[Instance, Any], bool] | None = None,
    timeout: float | None = None,
    when: Condition | None = None,
) -> WaitFor:
    """Wait for an intent of type ``intent`` sent to the saga keyed by its id (``where``:
    one it matches); fails after ``timeout`` s. ``intent`` must require a capability or be
    internal (anyone could send it otherwise)."""
    _timeout(timeout, f"step {name}")
    return WaitFor(name, intent=intent, where=where, timeout=timeout, when=when)


def parallel(*branches: Step | Sequence[Step]) -> Parallel:
    """Run ``branches`` at once (each a step or a list of steps run in order) and join them."""
    if len(branches) < 2:
        raise ValueError("parallel() takes at least two branches")
    out = []
    for branch in branches:
        steps = (branch,) if isinstance(branch, Step) else tuple(branch)
        if not steps or not all(isinstance(s, Step) for s in steps):
            raise ValueError("a parallel branch is a step or a non-empty list of steps")
        out.append(steps)
    return Parallel(tuple(out))


@dataclass(frozen=True)
class Plan:
    """A saga's steps compiled: stages of branches of steps, and each step by name."""

    stages: tuple[tuple[tuple[Step, ...], ...], ...]
    by_name: dict[str, Step]

    @classmethod
    def of(cls, steps: Sequence[StepLike]) -> Plan:
        if not steps:
            raise ValueError("a saga needs at least one step")
        stages: list[tuple[tuple[Step, ...], ...]] = []
        by_name: dict[str, Step] = {}
        for item in steps:
            if isinstance(item, Parallel):
                stages.append(item.branches)
            elif isinstance(item, Step):
                stages.append(((item,),))
            else:
                raise TypeError(f"{item!r} is not a step (send, call_tool, sleep, wait_for, "
                                "parallel)")  # fmt: skip
        for stage in stages:
            for branch in stage:
                for step in branch:
                    if step.name in by_name or not step.name:
                        raise ValueError(f"step names must be unique and not empty: {step.name!r}")
                    if ":" in step.name:
                        raise ValueError(f"step name {step.name!r}: no ':' in it")
                    by_name[step.name] = step
        return cls(tuple(stages), by_name)

    def wait_types(self) -> tuple[type[Intent], ...]:
        """The intent types ``wait_for`` steps wait for (the saga's topic takes them)."""
        found = {s.intent: None for s in self.by_name.values() if isinstance(s, WaitFor)}
        return tuple(found)

    def calls_tools(self) -> bool:
        steps = [*self.by_name.values(), *(s.compensate for s in self.by_name.values())]
        return any(isinstance(s, CallTool) for s in steps)
