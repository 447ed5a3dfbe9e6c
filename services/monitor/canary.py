"""Canary judging: an always-valid sequential test of a candidate against its baseline.

A canary rollout moves a candidate version through traffic steps (by default
5 → 25 → 50 → 100 %). The controller feeds a :class:`CanaryJudge` the
per-example scores and latencies of both arms and asks it, at any moment,
for a :class:`Decision`:

1. ROLLBACK when the candidate is shown worse than the baseline by more than
   ``max_drop`` (the always-valid p-value is at most ``alpha``), or when both
   arms have ``min_samples`` latencies and the candidate's p99 exceeds
   ``max_latency_ratio`` x the baseline's and the baseline's by more than
   ``latency_slack_ms``;
2. else ADVANCE when the step's ``interval_s`` has passed and the step holds
   ``min_samples`` scores per arm (the baseline serves nothing at a 100 % step,
   so there only the candidate's count is required); PROMOTE instead after
   the last step;
3. else CONTINUE, with what is still missing in the reason.

A ROLLBACK or PROMOTE is final: later looks repeat it. After an ADVANCE the
controller moves the judge on with :meth:`CanaryJudge.advance` once the
registry accepted the transition.

Scores are those of :func:`headwater.shared.quality.prediction_score`: 1/0 for a
right/wrong label (accuracy, higher is better), the absolute error of a value
(MAE, lower is better). Each step restarts the per-step counts (``min_samples``
and ``interval_s`` are per step), but the test uses every score since the
rollout began: its guarantee holds over all looks of the whole rollout, so
restarting it per step would only throw evidence away, and at a 100 % step the
baseline has no fresh scores to offer. The test itself is
:mod:`headwater.services.monitor.sequential`; at the defaults its
false-rollback rate under two equal versions is at most ``alpha`` however
often the judge is asked.

A clear loser (accuracy 0.6 against 0.8) is rolled back at the first step,
a clear winner (0.85 against 0.8) promoted after the last:

>>> import random
>>> def rollout(p_candidate, p_baseline, seed=7):
...     rng, judge = random.Random(seed), CanaryJudge(CanaryPolicy(), Task.CLASSIFICATION, 0.0)
...     for minute in range(1, 20):
...         for _ in range(5000):  # requests per minute, split by the step's weight
...             canary = rng.random() * 100 < judge.step_percent
...             arm, p = (Arm.CANDIDATE, p_candidate) if canary else (Arm.BASELINE, p_baseline)
...             judge.observe_score(arm, float(rng.random() < p))
...         decision = judge.decide(now=60.0 * minute)
...         if decision.action is not Action.ADVANCE:
...             return decision
...         judge.advance(now=60.0 * minute)
>>> loser = rollout(0.6, 0.8)
>>> loser.action, loser.evidence["step_percent"], loser.evidence["p_value"] < 1e-3
(<Action.ROLLBACK: 'rollback'>, 5.0, True)
>>> loser.reason[:46]
'candidate accuracy 0.6063 is worse than the ba'
>>> winner = rollout(0.85, 0.8)
>>> winner.action, winner.evidence["step_percent"], winner.evidence["p_value"]
(<Action.PROMOTE: 'promote'>, 100.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from types import MappingProxyType

from river import stats

from headwater.services.monitor.sequential import DropTest, RunningMoments, drop_test
from headwater.services.monitor.statistics import Task
from headwater.shared.errors import FailedPrecondition, InvalidInput

__all__ = ["Action", "Arm", "CanaryJudge", "CanaryPolicy", "Decision"]

_LATENCY_QUANTILE = 0.99


class Arm(StrEnum):
    """The two sides of a canary comparison."""

    CANDIDATE = "candidate"
    BASELINE = "baseline"


class Action(StrEnum):
    """What the judge asks the controller to do."""

    CONTINUE = "continue"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"

    @property
    def alert_kind(self) -> str | None:
        """The kind of the alert this action publishes (none for CONTINUE).

        >>> Action.ROLLBACK.alert_kind, Action.CONTINUE.alert_kind
        ('rollout.rollback', None)
        """
        return None if self is Action.CONTINUE else f"rollout.{self.value}"


@dataclass(frozen=True)
class Decision:
    """One look's verdict.

    Attributes:
        action: What to do.
        reason: One sentence with the numbers that decided it.
        evidence: The numbers, by name (sample counts, metric per arm,
            difference, test statistic, p-value, latency p99 per arm).

    """

    action: Action
    reason: str
    evidence: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))


@dataclass(frozen=True)
class CanaryPolicy:
    """How a canary rollout is judged (the registry's rollout parameters).

    Attributes:
        steps: Candidate traffic per step, in percent, strictly increasing; only
            the last may be 100 (a first step of 100 leaves nothing to compare),
            only the first 0 (a shadow: the candidate answers nothing and is
            scored on mirrored copies of the baseline's requests).
        interval_s: Least time spent in each step.
        min_samples: Least scores per arm in each step before it may end; the
            test also waits for this many per arm since the rollout began.
        max_drop: Non-inferiority margin, in the metric's units (accuracy
            points, or MAE units): a candidate worse by up to this is acceptable.
        alpha: The false-rollback rate of a candidate that is no worse than
            ``max_drop``, over every look of the rollout.
        max_latency_ratio: Largest acceptable candidate p99 / baseline p99.
        latency_slack_ms: Least excess of the candidate's p99 over the baseline's
            that counts as slower, whatever the ratio: the p99s of in-memory
            models are a millisecond or so, where the host's scheduling jitter
            alone makes one arm's p99 several times the other's.
        latency_window: Latest latencies per arm the p99 is taken over.
        mixture_scale: Standard deviation of the test's mixing distribution, in
            units of the scores' standard deviation
            (see :func:`headwater.services.monitor.sequential.drop_test`).

    """

    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    interval_s: float = 60.0
    min_samples: int = 200
    max_drop: float = 0.01
    alpha: float = 0.05
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 10.0
    latency_window: int = 1000
    mixture_scale: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
        _check_steps(self.steps)
        checks = (
            (self.interval_s >= 0, f"interval_s must be >= 0, got {self.interval_s}"),
            (self.min_samples >= 2, f"min_samples must be >= 2, got {self.min_samples}"),
            (self.max_drop >= 0, f"max_drop must be >= 0, got {self.max_drop}"),
            (0 < self.alpha < 1, f"alpha must be within (0, 1), got {self.alpha}"),
            (self.max_latency_ratio >= 1, "max_latency_ratio must be >= 1"),
            (self.latency_slack_ms >= 0, "latency_slack_ms must be >= 0"),
            (self.latency_window >= 1, "latency_window must be >= 1"),
            (self.mixture_scale > 0, "mixture_scale must be > 0"),
        )
        for ok, message in checks:
            if not ok:
                raise InvalidInput(message)


def _check_steps(steps: Sequence[float]) -> None:
    """Percentages within (0, 100], strictly increasing; a first step may be 0 (a shadow)."""
    if not steps or not 0 <= steps[0] <= 100 or any(not 0 < s <= 100 for s in steps[1:]):
        raise InvalidInput(
            f"steps must be percentages within (0, 100] (the first may be 0), got {list(steps)}"
        )
    if any(a >= b for a, b in pairwise(steps)):
        raise InvalidInput(f"steps must be strictly increasing, got {list(steps)}")
    if steps[0] == 100:
        raise InvalidInput("a first step of 100 % leaves no baseline to compare: use blue-green")


class _LatencyArm:
    """The latencies of one arm: how many, and the p99 of the latest window."""

    def __init__(self, window: int) -> None:
        self.count = 0
        self._p99 = stats.RollingQuantile(q=_LATENCY_QUANTILE, window_size=window)

    def add(self, latency_ms: float) -> None:
        self.count += 1
        self._p99.update(latency_ms)

    @property
    def p99_ms(self) -> float | None:
        return self._p99.get()


class CanaryJudge:
    """Judges one canary rollout from the scores and latencies of its two arms.

    Pure: no I/O, no clock; callers pass ``now`` (seconds, any consistent clock).

    Args:
        policy: The rollout's parameters.
        task: Classification (scores 1/0 correct) or regression (absolute errors).
        started_at: When the current step began (the rollout's start, usually).
        step: Index of the current step in ``policy.steps`` (to resume a rollout).

    """

    def __init__(self, policy: CanaryPolicy, task: Task, started_at: float, step: int = 0) -> None:
        if not 0 <= step < len(policy.steps):
            raise InvalidInput(f"step must be within [0, {len(policy.steps)}), got {step}")
        self.policy = policy
        self.task = task
        self._step = step
        self._step_started_at = started_at
        self._scores = {arm: RunningMoments() for arm in Arm}
        self._step_counts = dict.fromkeys(Arm, 0)
        self._latencies = {arm: _LatencyArm(policy.latency_window) for arm in Arm}
        self._p_value = 1.0
        self._final: Decision | None = None

    @property
    def step(self) -> int:
        """Index of the current step in ``policy.steps``."""
        return self._step

    @property
    def step_percent(self) -> float:
        """The candidate's traffic share in the current step, in percent."""
        return self.policy.steps[self._step]

    @property
    def p_value(self) -> float:
        """The always-valid p-value of "no drop beyond max_drop": min(1, 1/Λ) over the looks."""
        return self._p_value

    def observe_score(self, arm: Arm, score: float) -> None:
        """Count one example's score (1/0 correct, or an absolute error) for an arm."""
        top = 1.0 if self.task is Task.CLASSIFICATION else math.inf
        if not 0.0 <= score <= top:  # also refuses NaN
            raise InvalidInput(f"a {self.task.value} score must be within [0, {top}], got {score}")
        self._scores[arm].add(score)
        self._step_counts[arm] += 1

    def observe_latency(self, arm: Arm, latency_ms: float) -> None:
        """Count one served request's latency (ms) for an arm."""
        if not math.isfinite(latency_ms) or latency_ms < 0:
            raise InvalidInput(f"latency_ms must be finite and >= 0, got {latency_ms}")
        self._latencies[arm].add(latency_ms)

    def advance(self, now: float) -> None:
        """Enter the next step at ``now``: its time and per-step counts start afresh.

        Raises:
            FailedPrecondition: At the last step, or after a final decision.

        """
        if self._final is not None:
            raise FailedPrecondition(f"the rollout was decided already: {self._final.action}")
        if self._step + 1 >= len(self.policy.steps):
            raise FailedPrecondition("the last step has no next one: promote instead")
        self._step += 1
        self.restart_step(now)

    def restart_step(self, now: float) -> None:
        """Start the current step afresh at ``now`` (a resumed rollout): its time and counts.

        The test keeps every score since the rollout began, as at :meth:`advance`.
        """
        self._step_started_at = now
        self._step_counts = dict.fromkeys(Arm, 0)

    def decide(self, now: float) -> Decision:
        """Look at the evidence now and answer what to do (see the module docstring)."""
        if self._final is not None:
            return self._final
        test = self._look()
        evidence = self._evidence(now, test)
        decision = (
            self._quality_rollback(evidence)
            or self._latency_rollback(evidence)
            or self._step_end(evidence)
            or Decision(Action.CONTINUE, self._waiting_for(evidence), evidence)
        )
        if decision.action in (Action.PROMOTE, Action.ROLLBACK):
            self._final = decision
        return decision

    def _look(self) -> DropTest | None:
        """Run the test once both arms hold min_samples; keep the running-min p-value."""
        candidate, baseline = (self._scores[arm].moments() for arm in Arm)
        if min(candidate.count, baseline.count) < self.policy.min_samples:
            return None
        test = drop_test(
            candidate,
            baseline,
            higher_is_better=self.task is Task.CLASSIFICATION,
            max_drop=self.policy.max_drop,
            mixture_scale=self.policy.mixture_scale,
        )
        if test is not None:
            self._p_value = min(self._p_value, test.p_value)
        return test

    def _evidence(self, now: float, test: DropTest | None) -> dict[str, float]:
        policy, metric = self.policy, self.task.quality_metric
        evidence = {
            "step_index": float(self._step),
            "step_percent": self.step_percent,
            "step_elapsed_s": now - self._step_started_at,
            "max_drop": policy.max_drop,
            "alpha": policy.alpha,
            "p_value": self._p_value,
            "max_latency_ratio": policy.max_latency_ratio,
            "latency_slack_ms": policy.latency_slack_ms,
        }
        for arm in Arm:
            moments = self._scores[arm].moments()
            evidence[f"samples_{arm}"] = float(moments.count)
            evidence[f"step_samples_{arm}"] = float(self._step_counts[arm])
            if moments.count:
                evidence[f"{metric}_{arm}"] = moments.mean
        if test is not None:
            evidence.update(
                difference=evidence[f"{metric}_candidate"] - evidence[f"{metric}_baseline"],
                drop=test.drop,
                standard_error=test.standard_error,
                z=test.z,
                log_likelihood_ratio=test.log_likelihood_ratio,
            )
        evidence.update(self._latency_evidence())
        return evidence

    def _latency_evidence(self) -> dict[str, float]:
        """p99 per arm, and their ratio once both arms hold min_samples latencies."""
        evidence = {}
        for arm in Arm:
            evidence[f"latency_samples_{arm}"] = float(self._latencies[arm].count)
            p99 = self._latencies[arm].p99_ms
            if p99 is not None:
                evidence[f"latency_p99_{arm}_ms"] = p99
        counted = min(lat.count for lat in self._latencies.values()) >= self.policy.min_samples
        baseline = evidence.get("latency_p99_baseline_ms", 0.0)
        if counted and baseline > 0:
            evidence["latency_ratio"] = evidence["latency_p99_candidate_ms"] / baseline
        return evidence

    def _quality_rollback(self, evidence: dict[str, float]) -> Decision | None:
        if self._p_value > self.policy.alpha:
            return None
        metric = self.task.quality_metric
        reason = (
            f"candidate {metric} {evidence[f'{metric}_candidate']:.4g} is worse than the "
            f"baseline's {evidence[f'{metric}_baseline']:.4g} by {evidence['drop']:.4g}, "
            f"more than max_drop {self.policy.max_drop:g} "
            f"(always-valid p = {self._p_value:.3g} <= alpha {self.policy.alpha:g})"
        )
        return Decision(Action.ROLLBACK, reason, evidence)

    def _latency_rollback(self, evidence: dict[str, float]) -> Decision | None:
        policy, ratio = self.policy, evidence.get("latency_ratio", 0.0)
        if ratio <= policy.max_latency_ratio:
            return None
        candidate, baseline = (evidence[f"latency_p99_{arm}_ms"] for arm in Arm)
        if candidate - baseline <= policy.latency_slack_ms:
            return None
        reason = (
            f"candidate p99 latency {candidate:.4g} ms is {ratio:.3g}x the baseline's "
            f"{baseline:.4g} ms, more than max_latency_ratio {policy.max_latency_ratio:g} "
            f"and {candidate - baseline:.4g} ms more, beyond latency_slack_ms "
            f"{policy.latency_slack_ms:g}"
        )
        return Decision(Action.ROLLBACK, reason, evidence)

    def _missing(self, evidence: dict[str, float]) -> list[str]:
        """What the current step still lacks before it may end."""
        policy, missing = self.policy, []
        arms = (Arm.CANDIDATE,) if self.step_percent >= 100 else tuple(Arm)
        for arm in arms:
            have = int(evidence[f"step_samples_{arm}"])
            if have < policy.min_samples:
                missing.append(f"{have}/{policy.min_samples} {arm} samples")
        if evidence["step_elapsed_s"] < policy.interval_s:
            missing.append(f"{evidence['step_elapsed_s']:.1f}/{policy.interval_s:g} s")
        return missing

    def _step_end(self, evidence: dict[str, float]) -> Decision | None:
        if self._missing(evidence):
            return None
        last = self._step + 1 == len(self.policy.steps)
        summary = (
            f"step {self._step + 1} of {len(self.policy.steps)} ({self.step_percent:g} %) "
            f"passed with no drop beyond max_drop {self.policy.max_drop:g} "
            f"(always-valid p = {self._p_value:.3g})"
        )
        if last:
            return Decision(Action.PROMOTE, f"{summary}: promote", evidence)
        following = self.policy.steps[self._step + 1]
        return Decision(Action.ADVANCE, f"{summary}: advance to {following:g} %", evidence)

    def _waiting_for(self, evidence: dict[str, float]) -> str:
        return (
            f"step {self._step + 1} of {len(self.policy.steps)} ({self.step_percent:g} %) "
            f"waits for {', '.join(self._missing(evidence))}"
        )
