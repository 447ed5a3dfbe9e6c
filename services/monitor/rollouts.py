"""One rollout as the monitor judges it: the registry's rollout, its arms and its judge (pure).

The registry owns rollouts (state, steps, routes, history); the monitor judges
the active ones from the joined labels. :class:`TrackedRollout` is the
monitor's copy of one, and :func:`make_judge` the judge its strategy needs:

==========  =============================================  ==============================
strategy    candidate's scores                             judge
==========  =============================================  ==============================
canary      examples the candidate answered                :class:`CanaryRolloutJudge`
                                                           over the policy's steps
shadow      step 0: the shadow's scoring copies (route     :class:`CanaryRolloutJudge`
            role shadow, served by the candidate); once    over 0 %, then the steps: an
            advanced into a canary, as a canary            ADVANCE at step 0 makes the
                                                           shadow a canary
bandit      examples each arm answered                     :class:`BanditRolloutJudge`:
                                                           an ADVANCE with the candidate's
                                                           ``weight`` every ``interval_s``
==========  =============================================  ==============================

The baseline's scores are the examples it answered (a shadow copy never
counts for it). Blue-green and rolling rollouts are not judged here: their
switch is an operator's ``advance`` (or, later, the readiness gates), so the
monitor only shows them.

A canary that answers worse than its baseline is rolled back:

>>> rollout = TrackedRollout("r1", "churn", "canary", "progressing", 1, 2, step=0, revision=1,
...                          policy=JudgingPolicy(step_percents=(50.0, 100.0), min_samples=30))
>>> judge = make_judge(rollout, Task.CLASSIFICATION)
>>> for i in range(300):
...     judge.observe(ExampleObserved("churn", 1, Task.CLASSIFICATION, True, True), 1.0)
...     judge.observe(ExampleObserved("churn", 2, Task.CLASSIFICATION, True, i % 2 == 0),
...                   1.0 if i % 2 == 0 else 0.0)
>>> judge.decide(now=1.0).action
<Action.ROLLBACK: 'rollback'>
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

from headwater.services.monitor.bandit import BanditRouter
from headwater.services.monitor.canary import Action, Arm, CanaryJudge, CanaryPolicy, Decision
from headwater.services.monitor.domain import ExampleObserved, PredictionObserved
from headwater.services.monitor.statistics import Task
from headwater.shared.errors import FailedPrecondition, InvalidInput

__all__ = [
    "ACTIVE_STATES",
    "JUDGED_STRATEGIES",
    "BanditRolloutJudge",
    "CanaryRolloutJudge",
    "JudgingPolicy",
    "RolloutJudge",
    "TrackedRollout",
    "make_judge",
]

#: States of a rollout that is not over (the registry's).
ACTIVE_STATES = frozenset({"pending", "progressing", "paused"})
#: Strategies whose rollouts the monitor decides.
JUDGED_STRATEGIES = frozenset({"canary", "shadow", "bandit"})
SHADOW_ROLE = "shadow"
#: The evidence key of a bandit ADVANCE the registry reads: the candidate's new weight.
BANDIT_WEIGHT_KEY = "weight"


@dataclass(frozen=True)
class JudgingPolicy:
    """The registry's rollout policy, as far as judging goes (its defaults are the registry's).

    Attributes:
        step_percents: The canary steps, in percent, ending at 100.
        interval_s: Least time per step (for a bandit: between two weight updates).
        min_samples: Least joined labels per arm per step before a canary advances.
        max_drop: Non-inferiority margin on joined-label quality.
        alpha: Level of the sequential test (the false-rollback rate).
        bandit_floor_weight: Least weight of each bandit arm.
        max_latency_ratio: Candidate p99 latency over the baseline's above which it loses.

    """

    step_percents: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    interval_s: float = 60.0
    min_samples: int = 200
    max_drop: float = 0.01
    alpha: float = 0.05
    bandit_floor_weight: float = 0.05
    max_latency_ratio: float = 1.5

    def canary_policy(self, strategy: str) -> CanaryPolicy:
        """The canary judge's policy; a shadow's mirrored phase is a first step of 0 %.

        >>> JudgingPolicy(step_percents=(50.0, 100.0)).canary_policy("shadow").steps
        (0.0, 50.0, 100.0)

        Raises:
            InvalidInput: The policy cannot be judged (e.g. a single step of 100 %).

        """
        steps = (0.0, *self.step_percents) if strategy == "shadow" else self.step_percents
        return CanaryPolicy(
            steps=steps,
            interval_s=self.interval_s,
            min_samples=max(2, self.min_samples),  # a variance needs two scores
            max_drop=self.max_drop,
            alpha=self.alpha,
            max_latency_ratio=self.max_latency_ratio,
        )


@dataclass(frozen=True)
class TrackedRollout:
    """The monitor's copy of one registry rollout (times in wall-clock seconds).

    ``step`` is the registry's: canary, the index into ``step_percents``;
    shadow, 0 while mirrored and k >= 1 a canary at ``step_percents[k - 1]``;
    bandit, the number of weight updates.
    """

    rollout_id: str
    model: str
    strategy: str
    state: str
    baseline_version: int
    candidate_version: int
    step: int = 0
    revision: int = 1
    created_at: float = 0.0
    step_started_at: float = 0.0
    policy: JudgingPolicy = JudgingPolicy()

    @property
    def active(self) -> bool:
        """Whether the rollout is not over."""
        return self.state in ACTIVE_STATES

    @property
    def judged(self) -> bool:
        """Whether the monitor decides rollouts of this strategy."""
        return self.strategy in JUDGED_STRATEGIES

    def supersedes(self, other: TrackedRollout) -> bool:
        """Whether this copy is newer than ``other`` (the same rollout later, or a later one).

        >>> a = TrackedRollout("r1", "m", "canary", "progressing", 1, 2, revision=2)
        >>> b = TrackedRollout("r1", "m", "canary", "paused", 1, 2, revision=3)
        >>> b.supersedes(a), a.supersedes(b), a.supersedes(a)
        (True, False, False)
        """
        if self.rollout_id == other.rollout_id:
            return self.revision > other.revision
        return self.created_at >= other.created_at

    def describe(self) -> str:
        """The rollout in a few words.

        >>> TrackedRollout("r1", "m", "canary", "progressing", 1, 2).describe()
        'canary of v2 over v1'
        """
        return f"{self.strategy} of v{self.candidate_version} over v{self.baseline_version}"


class RolloutJudge(Protocol):
    """What the controller asks of a rollout's judge."""

    task: Task

    def observe(self, example: ExampleObserved, score: float) -> None:
        """Count one scored example (ignored when it belongs to no arm)."""

    def observe_latency(self, prediction: PredictionObserved) -> None:
        """Count one served prediction's latency (ignored when it belongs to no arm)."""

    def follow(self, rollout: TrackedRollout) -> None:
        """Move along with the registry's rollout (an advance, a resume)."""

    def decide(self, now: float) -> Decision:
        """The decision at ``now``."""


class CanaryRolloutJudge:
    """A :class:`CanaryJudge` fed by a canary's (or a shadow's) arms, following its steps.

    Args:
        rollout: The rollout (strategy canary or shadow).
        task: What the model predicts.

    Raises:
        InvalidInput: The policy cannot be judged, or the step is outside it.

    """

    def __init__(self, rollout: TrackedRollout, task: Task) -> None:
        self.task = task
        self._rollout = rollout
        self._policy = rollout.policy.canary_policy(rollout.strategy)
        self._judge = self._fresh_judge(rollout)

    def arm(self, version: int, route_role: str) -> Arm | None:
        """The arm a served version counts for; a shadow copy counts only for a shadow.

        >>> rollout = TrackedRollout("r1", "m", "shadow", "progressing", 1, 2)
        >>> judge = CanaryRolloutJudge(rollout, Task.CLASSIFICATION)
        >>> [judge.arm(2, "shadow"), judge.arm(1, "primary"), judge.arm(1, "shadow"),
        ...  judge.arm(3, "")]
        [<Arm.CANDIDATE: 'candidate'>, <Arm.BASELINE: 'baseline'>, None, None]
        """
        rollout, shadow_copy = self._rollout, route_role == SHADOW_ROLE
        if version == rollout.candidate_version and (
            not shadow_copy or rollout.strategy == "shadow"
        ):
            return Arm.CANDIDATE
        if version == rollout.baseline_version and not shadow_copy:
            return Arm.BASELINE
        return None

    def observe(self, example: ExampleObserved, score: float) -> None:
        """Count one scored example for its arm."""
        arm = self.arm(example.version, example.route_role)
        if arm is not None:
            self._judge.observe_score(arm, score)

    def observe_latency(self, prediction: PredictionObserved) -> None:
        """Count one served prediction's latency for its arm."""
        arm = self.arm(prediction.version, prediction.route_role)
        if arm is not None:
            self._judge.observe_latency(arm, prediction.latency_ms)

    def follow(self, rollout: TrackedRollout) -> None:
        """Advance with the registry's step, restart a resumed step; else start afresh.

        An advance by one keeps every score (the test covers the whole
        rollout); any other jump of the step (someone else moved it several
        steps, or back) starts a new judge at the new step.
        """
        before, self._rollout = self._rollout, rollout
        judge = self._judge
        if rollout.step == judge.step:
            if rollout.step_started_at != before.step_started_at:
                judge.restart_step(rollout.step_started_at)
            return
        if rollout.step == judge.step + 1:
            try:
                judge.advance(rollout.step_started_at)
                return
            except FailedPrecondition:  # decided already: judge the new step afresh
                pass
        self._judge = self._fresh_judge(rollout)

    def decide(self, now: float) -> Decision:
        """The canary judge's decision at ``now``."""
        return self._judge.decide(now)

    def _fresh_judge(self, rollout: TrackedRollout) -> CanaryJudge:
        return CanaryJudge(self._policy, self.task, rollout.step_started_at, rollout.step)


class BanditRolloutJudge:
    """A :class:`BanditRouter` of the baseline and the candidate, advancing at a fixed cadence.

    Every ``interval_s`` in which labels arrived it asks for an ADVANCE whose
    evidence ``weight`` is the candidate's new share (clamped to the floor, as
    the registry requires). It never promotes or rolls back: a bandit keeps
    routing until someone promotes, rolls back or aborts it.

    Args:
        rollout: The rollout (strategy bandit).
        task: What the model predicts.
        draws: Thompson pulls per weight estimate.

    """

    def __init__(self, rollout: TrackedRollout, task: Task, draws: int = 1000) -> None:
        self.task = task
        self._rollout = rollout
        versions = [rollout.baseline_version, rollout.candidate_version]
        seed = zlib.crc32(rollout.rollout_id.encode())  # the same rollout, the same weights
        floor = rollout.policy.bandit_floor_weight
        self._router = BanditRouter(versions, task, floor=floor, draws=draws, seed=seed)
        self._step_samples = 0

    def observe(self, example: ExampleObserved, score: float) -> None:
        """Learn one answered example of either arm (shadow copies are not answers)."""
        rollout = self._rollout
        answered = example.route_role != SHADOW_ROLE
        if answered and example.version in (rollout.baseline_version, rollout.candidate_version):
            self._router.observe(example.version, score)
            self._step_samples += 1

    def observe_latency(self, prediction: PredictionObserved) -> None:
        """Latency does not weigh in a bandit's rewards."""

    def follow(self, rollout: TrackedRollout) -> None:
        """A new step (a weight update, a resume) restarts the cadence."""
        before, self._rollout = self._rollout, rollout
        if (rollout.step, rollout.step_started_at) != (before.step, before.step_started_at):
            self._step_samples = 0

    def decide(self, now: float) -> Decision:
        """ADVANCE with the new weight once the interval passed with labels, else CONTINUE."""
        rollout = self._rollout
        elapsed = now - rollout.step_started_at
        timing = {
            "step_index": float(rollout.step),
            "step_elapsed_s": elapsed,
            "step_samples": float(self._step_samples),
        }
        if elapsed < rollout.policy.interval_s or not self._step_samples:
            reason = (
                f"bandit update {rollout.step + 1} waits for {elapsed:.1f}/"
                f"{rollout.policy.interval_s:g} s and labels ({self._step_samples} so far)"
            )
            return Decision(Action.CONTINUE, reason, timing)
        snapshot = self._router.snapshot()
        floor, candidate = rollout.policy.bandit_floor_weight, rollout.candidate_version
        weight = min(max(snapshot.weights[candidate], floor), 1.0 - floor)
        reason = (
            f"bandit update {rollout.step + 1}: v{candidate} is the better arm with "
            f"probability {snapshot.p_best[candidate]:.3f}: its weight becomes {weight:.3f}"
        )
        evidence = {**snapshot.evidence, **timing, BANDIT_WEIGHT_KEY: weight}
        return Decision(Action.ADVANCE, reason, evidence)


def make_judge(rollout: TrackedRollout, task: Task, bandit_draws: int = 1000) -> RolloutJudge:
    """The judge of a judged rollout's strategy.

    Raises:
        InvalidInput: The strategy is not judged here, or its policy cannot be judged.

    """
    if rollout.strategy == "bandit":
        return BanditRolloutJudge(rollout, task, bandit_draws)
    if rollout.strategy in ("canary", "shadow"):
        return CanaryRolloutJudge(rollout, task)
    raise InvalidInput(f"{rollout.describe()} is not judged by the monitor")
