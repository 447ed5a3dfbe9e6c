"""The demo's rollouts: each new checkpoint of the primary goes out in a canary the monitor judges.

The demo never promotes a version itself. When the trainer registers a
checkpoint of the primary's learner, the demo starts a canary rollout of it
(short steps) and the monitor advances, promotes or rolls it back from the
joined labels, through the registry. The demo reads each rollout's history
back and reports every move with the numbers it rests on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from headwater.shared import enums
from headwater.shared.errors import HeadwaterError
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, rollout_policy

ACTIVE = frozenset({"pending", "progressing", "paused"})


@dataclass(frozen=True)
class CanaryPlan:
    """The canary policy of the demo's rollouts: short steps, so each is decided in seconds."""

    step_percents: tuple[float, ...] = (25.0, 100.0)
    interval_s: float = 2.0
    min_samples: int = 60
    max_drop: float = 0.02

    def policy(self) -> registry_pb2.RolloutPolicy:
        """The registry's RolloutPolicy of this plan (alpha and the rest at their defaults)."""
        return rollout_policy(self.step_percents, interval_s=self.interval_s,
                              min_samples=self.min_samples, max_drop=self.max_drop)


def describe_move(rollout: registry_pb2.Rollout, move: registry_pb2.RolloutTransition) -> str:
    """One line for a move of a rollout, with the numbers the monitor decided on.

    >>> rollout = registry_pb2.Rollout(candidate_version=3, baseline_version=2,
    ...     policy=registry_pb2.RolloutPolicy(step_percents=[25, 100]))
    >>> advance = registry_pb2.RolloutTransition(
    ...     action=registry_pb2.ROLLOUT_ACTION_ADVANCE, actor="monitor",
    ...     evidence={"step_percent": 25.0, "accuracy_candidate": 0.9412, "p_value": 1.0,
    ...               "accuracy_baseline": 0.9357, "samples_candidate": 64.0,
    ...               "samples_baseline": 190.0})
    >>> describe_move(rollout, advance)
    'v3 over v2: advance at 25% · accuracy 0.941 vs 0.936, 64/190 labels, p 1'
    >>> start = registry_pb2.RolloutTransition(action=registry_pb2.ROLLOUT_ACTION_START,
    ...                                        actor="demo")
    >>> describe_move(rollout, start)
    'v3 over v2: canary started by demo (steps 25, 100 %)'
    """
    head = f"v{rollout.candidate_version} over v{rollout.baseline_version}"
    action = enums.ROLLOUT_ACTIONS.get(move.action, "?")
    if move.action == registry_pb2.ROLLOUT_ACTION_START:
        steps = ", ".join(f"{p:g}" for p in rollout.policy.step_percents)
        return f"{head}: canary started by {move.actor} (steps {steps} %)"
    numbers = _numbers(move.evidence)
    where = f" at {move.evidence['step_percent']:g}%" if "step_percent" in move.evidence else ""
    by = "" if move.actor == "monitor" else f" by {move.actor}"
    return f"{head}: {action}{where}{by}" + (f" · {numbers}" if numbers else "")


def _numbers(evidence: Mapping[str, float]) -> str:
    """Accuracy per arm, their label counts and the p-value, as far as the evidence has them."""
    if "accuracy_candidate" not in evidence or "accuracy_baseline" not in evidence:
        return ""
    counts = f"{evidence.get('samples_candidate', 0):.0f}/{evidence.get('samples_baseline', 0):.0f}"
    return (f"accuracy {evidence['accuracy_candidate']:.3f} vs {evidence['accuracy_baseline']:.3f},"
            f" {counts} labels, p {evidence.get('p_value', 1.0):.2g}")


class CanaryPilot:
    """Starts a canary of each new checkpoint of the primary; reports the rollouts' moves.

    Args:
        registry: A registry client (its actor names the demo in the history).
        model: The demo's model.
        plan: The canary policy.
        report: Prints one line (a move of a rollout, or a refusal).

    """

    def __init__(self, registry: RegistryClient, model: str, plan: CanaryPlan,
                 report: Callable[[str], None]) -> None:
        #: The registry client the pilot moves rollouts with.
        self.registry = registry
        self._model = model
        self._plan = plan
        self._report = report
        self._reported: set[tuple[str, int]] = set()
        self._tried: set[int] = set()
        #: The latest state of each candidate's rollout, by candidate version.
        self.outcomes: dict[int, str] = {}
        #: The rollout in flight, if any.
        self.current: registry_pb2.Rollout | None = None
        #: Whether new checkpoints may still be rolled out (False once the stream ends).
        self.accepting = True

    @property
    def busy(self) -> bool:
        """Whether a rollout is in flight."""
        return self.current is not None

    def status(self) -> str:
        """The rollout in flight in a few words (empty when none)."""
        if self.current is None:
            return ""
        steps, step = self.current.policy.step_percents, self.current.step
        return f"canary v{self.current.candidate_version} at {steps[min(step, len(steps) - 1)]:g}%"

    async def poll(self) -> None:
        """Report the rollouts' new moves; with none in flight, start the next canary."""
        await self._follow()
        if self.current is None and self.accepting:
            await self._start_next()

    async def abort(self, reason: str) -> None:
        """Call off the rollout in flight (the demo's traffic stopped), and report it."""
        if self.current is not None:
            await self.registry.transition_rollout(self._model, "abort", reason=reason)
            await self._follow()

    async def _follow(self) -> None:
        current = None
        for entry in reversed(await self.registry.list_rollouts(self._model, limit=3)):
            rollout = entry.rollout
            state = enums.ROLLOUT_STATES.get(rollout.state, "?")
            self.outcomes[rollout.candidate_version] = state
            current = rollout if state in ACTIVE else current
            for move in entry.transitions:
                if (rollout.id, move.revision) not in self._reported:
                    self._reported.add((rollout.id, move.revision))
                    self._report(describe_move(rollout, move))
        self.current = current

    async def _start_next(self) -> None:
        """A canary of the newest checkpoint of the primary not tried yet, if there is one."""
        deployment = await self.registry.get_deployment(self._model)
        primary = next(r.version for r in deployment.routes
                       if r.role == registry_pb2.ROUTE_ROLE_PRIMARY)
        fresh = [v for v in await self.registry.list_versions(self._model)
                 if v.lineage.parent_version == primary and v.version not in self._tried]
        if not fresh:
            return
        candidate = max(fresh, key=lambda v: v.version)
        self._tried.update(v.version for v in fresh)  # older checkpoints are superseded by it
        await self.start(candidate.version, f"checkpoint of v{primary} after "
                         f"{candidate.lineage.example_count} examples: let the labels judge it")

    async def start(self, version: int, reason: str) -> None:
        """Start a canary of ``version`` over the primary; a refusal is reported, not raised."""
        self._tried.add(version)
        try:
            self.current = await self.registry.start_rollout(
                self._model, version, "canary", self._plan.policy(), reason=reason)
        except HeadwaterError as err:  # e.g. a promotion gate: the demo goes on without it
            self._report(f"v{version}: canary refused: {err}")
            return
        self.outcomes[version] = "progressing"
