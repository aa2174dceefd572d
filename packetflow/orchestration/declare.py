"""Declaring a saga in a topology module: :func:`saga` names it and its start intent,
:meth:`Saga.steps` gives its steps and adds its agent to the topology."""

from __future__ import annotations

from dataclasses import dataclass, field

from packetflow.core.intent import Intent
from packetflow.engine.mcpcall import McpResult
from packetflow.engine.topology import Topology, TopologyError
from packetflow.orchestration.agent import INSTANCES, SagaSpec
from packetflow.orchestration.intents import SagaOutcome, SagaTransition
from packetflow.orchestration.steps import Plan, StepLike


@dataclass
class Saga:
    """A saga being declared: call :meth:`steps` once to give it its steps."""

    topology: Topology
    name: str
    start: type[Intent]
    topic: str
    outcome_topic: str
    transitions_topic: str
    keep: float
    partitions: int | None
    spec: SagaSpec | None = field(default=None, repr=False)

    def steps(self, *steps: StepLike) -> Saga:
        """The saga's steps, run in order (``parallel(...)`` for branches joined): adds the
        saga's agent to the topology. Raises ``TopologyError`` for a plan it cannot run."""
        if self.spec is not None:
            raise TopologyError(f"saga {self.name} has its steps already")
        try:
            plan = Plan.of(steps)
        except (TypeError, ValueError) as exc:
            raise TopologyError(f"saga {self.name}: {exc}") from None
        if self.start in plan.wait_types():
            raise TopologyError(f"saga {self.name}: it cannot wait for its start intent")
        for waited in plan.wait_types():  # they come to the saga's topic, keyed by instance
            if waited.key_field is None:
                raise TopologyError(f"saga {self.name}: {waited.intent_type} needs a key (the "
                                    "instance's id) to be waited for")  # fmt: skip
            routed = self.topology.topic_for(waited)
            if routed is not None and routed != self.topic:
                raise TopologyError(f"saga {self.name}: {waited.intent_type} is routed to "
                                    f"{routed}, not to the saga's topic {self.topic}: it "
                                    "would never reach the saga")  # fmt: skip
        spec = SagaSpec(
            name=self.name,
            topic=self.topic,
            intent_types=(self.start, McpResult, *plan.wait_types()),
            description=f"saga: {len(plan.by_name)} steps from {self.start.intent_type}",
            stores=(INSTANCES,),
            emits=(SagaTransition, SagaOutcome),
            topology=self.topology,
            start=self.start,
            plan=plan,
            outcome_topic=self.outcome_topic,
            transitions_topic=self.transitions_topic,
            keep=self.keep,
        )
        self.topology.add_agent(spec, self.partitions)
        self.topology.route(SagaOutcome, self.outcome_topic)
        self.spec = spec
        return self


def saga(
    topology: Topology,
    name: str,
    *,
    start: type[Intent],
    topic: str | None = None,
    outcome_topic: str | None = None,
    transitions_topic: str | None = None,
    keep: float = 86400.0,
    partitions: int | None = None,
) -> Saga:
    """Declare saga ``name``: an instance per ``start`` intent (its id the intent's key),
    on ``topic`` (default ``<topology>.<name>``; where ``start`` is routed, and where its
    steps' answers come back), its outcome (:class:`SagaOutcome`) on ``outcome_topic``
    (default ``<topology>.<name>.outcomes``) and every transition on ``transitions_topic``
    (default ``<topology>.<name>.transitions``). A finished instance stays ``keep`` seconds
    (a duplicate start is ignored meanwhile). Give its steps with ``.steps(...)``."""
    if start.key_field is None:
        raise TopologyError(f"saga {name}: {start.intent_type} needs a key (the instance's id)")
    topic = topic or f"{topology.name}.{name}"
    routed = topology.topic_for(start)
    if routed is not None and routed != topic:
        raise TopologyError(f"saga {name}: {start.intent_type} is routed to {routed}, not to "
                            f"the saga's topic {topic}")  # fmt: skip
    if keep <= 0:
        raise TopologyError(f"saga {name}: keep must be positive")
    return Saga(
        topology, name, start, topic,
        outcome_topic or f"{topology.name}.{name}.outcomes",
        transitions_topic or f"{topology.name}.{name}.transitions",
        keep, partitions,
    )  # fmt: skip
