"""Canary judging: the decision rules, and the false-rollback rate by simulation."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import pytest

from headwater.services.monitor.canary import Action, Arm, CanaryJudge, CanaryPolicy, Decision
from headwater.services.monitor.sequential import ScoreMoments, drop_test
from headwater.services.monitor.statistics import Task
from headwater.shared.errors import FailedPrecondition, InvalidInput

Z_ONE_SIDED_5_PERCENT = 1.6448536269514722
RUNS = 300


def binomial_ceiling(rate: float, runs: int) -> float:
    """The rate plus three binomial standard errors: what ``runs`` runs may observe."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / runs)


def rollout(
    judge: CanaryJudge,
    candidate: Callable[[], float],
    baseline: Callable[[], float],
    rng: random.Random,
    requests_per_minute: int = 5000,
    minutes: int = 30,
) -> list[Decision]:
    """Serve traffic split by the step's weight, look once a minute, act as a controller."""
    decisions = []
    for minute in range(1, minutes + 1):
        for _ in range(requests_per_minute):
            to_candidate = rng.random() * 100 < judge.step_percent
            arm, score = (Arm.CANDIDATE, candidate) if to_candidate else (Arm.BASELINE, baseline)
            judge.observe_score(arm, score())
        decision = judge.decide(now=60.0 * minute)
        decisions.append(decision)
        if decision.action is Action.ADVANCE:
            judge.advance(now=60.0 * minute)
        elif decision.action is not Action.CONTINUE:
            break
    return decisions


def bernoulli(rng: random.Random, p: float) -> Callable[[], float]:
    return lambda: float(rng.random() < p)


def classifier_judge(**policy: object) -> CanaryJudge:
    return CanaryJudge(CanaryPolicy(**policy), Task.CLASSIFICATION, started_at=0.0)  # type: ignore[arg-type]


def test_a_worse_candidate_is_rolled_back_with_its_evidence() -> None:
    rng = random.Random(1)
    decisions = rollout(classifier_judge(), bernoulli(rng, 0.6), bernoulli(rng, 0.8), rng)
    last = decisions[-1]
    assert [d.action for d in decisions] == [Action.ROLLBACK]
    assert last.action.alert_kind == "rollout.rollback"
    e = last.evidence
    assert e["step_percent"] == 5.0
    assert e["samples_candidate"] >= 200 and e["samples_baseline"] >= 200
    assert e["accuracy_candidate"] == pytest.approx(0.6, abs=0.1)
    assert e["accuracy_baseline"] == pytest.approx(0.8, abs=0.02)
    assert e["difference"] == pytest.approx(e["accuracy_candidate"] - e["accuracy_baseline"])
    assert e["drop"] == pytest.approx(-e["difference"])
    assert e["p_value"] <= 0.05 and e["z"] > 3 and e["log_likelihood_ratio"] > math.log(20)
    assert "worse than the baseline" in last.reason and "max_drop 0.01" in last.reason


@pytest.mark.parametrize("p_candidate", [0.85, 0.8])
def test_a_better_or_equal_candidate_advances_through_every_step_and_is_promoted(
    p_candidate: float,
) -> None:
    rng = random.Random(2)
    judge = classifier_judge()
    decisions = rollout(judge, bernoulli(rng, p_candidate), bernoulli(rng, 0.8), rng)
    assert [d.action for d in decisions] == [Action.ADVANCE] * 3 + [Action.PROMOTE]
    assert [d.evidence["step_percent"] for d in decisions] == [5.0, 25.0, 50.0, 100.0]
    assert "advance to 25 %" in decisions[0].reason
    promoted = decisions[-1]
    assert promoted.evidence["step_samples_baseline"] == 0  # the baseline serves nothing at 100 %
    assert promoted.evidence["samples_baseline"] > 1000  # the test keeps its earlier samples
    assert promoted.evidence["p_value"] > 0.05
    assert judge.decide(now=1e6) is promoted  # final: later looks repeat it
    with pytest.raises(FailedPrecondition):
        judge.advance(now=1e6)


def feed(judge: CanaryJudge, arm: Arm, scores: list[float]) -> None:
    for s in scores:
        judge.observe_score(arm, s)


def test_a_step_ends_only_with_min_samples_per_arm_and_its_interval() -> None:
    judge = classifier_judge(min_samples=200, interval_s=60.0)
    feed(judge, Arm.CANDIDATE, [1.0, 0.0] * 99 + [1.0])  # 199
    feed(judge, Arm.BASELINE, [1.0, 0.0] * 500)
    waiting = judge.decide(now=600.0)
    assert waiting.action is Action.CONTINUE
    assert waiting.action.alert_kind is None
    assert "199/200 candidate samples" in waiting.reason
    feed(judge, Arm.CANDIDATE, [0.0])
    assert judge.decide(now=59.0).action is Action.CONTINUE
    assert "59.0/60 s" in judge.decide(now=59.0).reason
    assert judge.decide(now=60.0).action is Action.ADVANCE
    judge.advance(now=60.0)
    assert judge.step == 1 and judge.step_percent == 25.0
    fresh = judge.decide(now=200.0)  # the new step counts afresh
    assert fresh.action is Action.CONTINUE
    assert (
        fresh.evidence["step_samples_candidate"] == 0 and fresh.evidence["samples_candidate"] == 200
    )
    assert "0/200 candidate samples, 0/200 baseline samples" in fresh.reason


def test_the_test_waits_for_min_samples_before_it_may_roll_back() -> None:
    judge = classifier_judge(min_samples=200)
    feed(judge, Arm.CANDIDATE, [0.0] * 150)  # all wrong
    feed(judge, Arm.BASELINE, [1.0] * 1000)  # all right
    early = judge.decide(now=10.0)
    assert early.action is Action.CONTINUE and "z" not in early.evidence
    feed(judge, Arm.CANDIDATE, [0.0] * 50)
    assert judge.decide(now=11.0).action is Action.ROLLBACK  # constant arms still conclude


def test_latency_guard_rolls_back_a_slow_candidate_once_both_arms_have_min_samples() -> None:
    judge = classifier_judge(min_samples=200, max_latency_ratio=1.5)
    for i in range(199):
        judge.observe_latency(Arm.CANDIDATE, 30.0 + i % 7)
    for i in range(1000):
        judge.observe_latency(Arm.BASELINE, 10.0 + i % 7)
    assert judge.decide(now=1.0).action is Action.CONTINUE
    judge.observe_latency(Arm.CANDIDATE, 30.0)
    slow = judge.decide(now=2.0)
    assert slow.action is Action.ROLLBACK
    assert slow.evidence["latency_p99_candidate_ms"] == pytest.approx(36.0, abs=0.5)
    assert slow.evidence["latency_p99_baseline_ms"] == pytest.approx(16.0, abs=0.5)
    assert slow.evidence["latency_ratio"] > 1.5
    assert "p99 latency" in slow.reason and "max_latency_ratio 1.5" in slow.reason


def test_latency_within_the_ratio_does_not_stop_a_step() -> None:
    judge = classifier_judge(min_samples=200, interval_s=0.0)
    for i in range(400):
        judge.observe_latency(Arm.CANDIDATE, 12.0 + i % 5)
        judge.observe_latency(Arm.BASELINE, 10.0 + i % 5)
        judge.observe_score(Arm.CANDIDATE, float(i % 5 != 0))
        judge.observe_score(Arm.BASELINE, float(i % 5 != 0))
    decision = judge.decide(now=1.0)
    assert decision.action is Action.ADVANCE
    assert decision.evidence["latency_ratio"] == pytest.approx(16.0 / 14.0, rel=0.02)


def test_a_p99_gap_within_the_latency_slack_is_jitter_not_a_slower_candidate() -> None:
    # what the e2e stack saw: sub-millisecond models whose p99s differ by a hiccup
    judge = classifier_judge(min_samples=60, interval_s=0.0)
    for i in range(100):
        judge.observe_latency(Arm.CANDIDATE, 6.5 if i % 10 == 0 else 0.3)
        judge.observe_latency(Arm.BASELINE, 1.0 if i % 10 == 0 else 0.3)
        judge.observe_score(Arm.CANDIDATE, 1.0)
        judge.observe_score(Arm.BASELINE, float(i % 2))
    jitter = judge.decide(now=1.0)
    assert jitter.evidence["latency_ratio"] == pytest.approx(6.5) and jitter.evidence[
        "latency_slack_ms"] == 10.0
    assert jitter.action is Action.ADVANCE
    for _ in range(100):  # now 20 ms against 1 ms: slower by more than the slack too
        judge.observe_latency(Arm.CANDIDATE, 20.0)
    slow = judge.decide(now=2.0)
    assert slow.action is Action.ROLLBACK and "beyond latency_slack_ms 10" in slow.reason


@pytest.mark.parametrize(
    ("candidate_error", "expected"), [(2.0, Action.ROLLBACK), (0.8, Action.PROMOTE)]
)
def test_regression_judges_mean_absolute_error_lower_is_better(
    candidate_error: float, expected: Action
) -> None:
    rng = random.Random(3)
    judge = CanaryJudge(CanaryPolicy(max_drop=0.05), Task.REGRESSION, started_at=0.0)
    decisions = rollout(
        judge,
        lambda: abs(rng.gauss(0.0, candidate_error)),
        lambda: abs(rng.gauss(0.0, 1.0)),
        rng,
    )
    last = decisions[-1]
    assert last.action is expected
    assert (last.evidence["mae_candidate"] > last.evidence["mae_baseline"]) == (
        expected is Action.ROLLBACK
    )
    assert last.evidence["drop"] == pytest.approx(last.evidence["difference"])  # lower is better


def test_policy_and_observations_are_validated() -> None:
    with pytest.raises(InvalidInput, match="strictly increasing"):
        CanaryPolicy(steps=(25.0, 5.0))
    with pytest.raises(InvalidInput, match="blue-green"):
        CanaryPolicy(steps=(100.0,))
    with pytest.raises(InvalidInput, match="alpha"):
        CanaryPolicy(alpha=1.0)
    judge = classifier_judge()
    for bad in (2.0, -1.0, math.nan):
        with pytest.raises(InvalidInput):
            judge.observe_score(Arm.CANDIDATE, bad)
    with pytest.raises(InvalidInput):
        judge.observe_latency(Arm.BASELINE, -1.0)
    with pytest.raises(InvalidInput):
        CanaryJudge(CanaryPolicy(), Task.CLASSIFICATION, started_at=0.0, step=4)


def test_a_resumed_judge_starts_at_its_step_and_the_last_step_has_no_next() -> None:
    judge = CanaryJudge(CanaryPolicy(), Task.CLASSIFICATION, started_at=100.0, step=3)
    assert judge.step_percent == 100.0
    with pytest.raises(FailedPrecondition, match="promote"):
        judge.advance(now=200.0)


def test_decisions_are_immutable() -> None:
    decision = classifier_judge().decide(now=0.0)
    with pytest.raises(TypeError):
        decision.evidence["p_value"] = 0.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        decision.action = Action.PROMOTE  # type: ignore[misc]


# --- the false-rollback rate: equal arms, many seeds, many looks -------------------------


def equal_arms_rollout(seed: int, p: float = 0.8, per_look: int = 50) -> tuple[Action, bool]:
    """A whole canary rollout of two equal versions, looked at every 50 requests.

    Returns the judge's final action, and whether a fixed-sample one-sided z-test
    at 5 % (the same statistic, the same looks) would have rolled back at any look.
    """
    rng = np.random.default_rng([20260, seed])
    judge = CanaryJudge(CanaryPolicy(max_drop=0.0, interval_s=0.0), Task.CLASSIFICATION, 0.0)
    requests = 8000
    buckets = (rng.random(requests) * 100).tolist()
    scores = (rng.random(requests) < p).astype(float).tolist()
    naive = False
    for start in range(0, requests, per_look):
        percent = judge.step_percent
        for bucket, score in zip(
            buckets[start : start + per_look], scores[start : start + per_look], strict=True
        ):
            judge.observe_score(Arm.CANDIDATE if bucket < percent else Arm.BASELINE, score)
        decision = judge.decide(now=float(start))
        naive = naive or decision.evidence.get("z", -math.inf) > Z_ONE_SIDED_5_PERCENT
        if decision.action is Action.ADVANCE:
            judge.advance(now=float(start))
        elif decision.action is not Action.CONTINUE:
            return decision.action, naive
    raise AssertionError("the rollout did not finish")  # pragma: no cover


def test_equal_versions_are_rolled_back_at_most_alpha_of_the_time_and_a_naive_test_more() -> None:
    # max_drop 0: the hardest null, the versions are exactly at the margin.
    outcomes = [equal_arms_rollout(seed) for seed in range(RUNS)]
    false_rollbacks = sum(action is Action.ROLLBACK for action, _ in outcomes) / RUNS
    naive_rollbacks = sum(naive for _, naive in outcomes) / RUNS
    assert false_rollbacks <= binomial_ceiling(0.05, RUNS)
    # Checking a fixed-sample test at every look inflates its 5 % several-fold.
    assert naive_rollbacks > binomial_ceiling(0.05, RUNS)
    assert naive_rollbacks > 2 * false_rollbacks + 0.05


def moments_at(scores: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run and look, the mean and unbiased variance of the first ``counts`` scores."""
    sums = np.cumsum(scores, axis=1)[:, counts - 1]
    squares = np.cumsum(scores * scores, axis=1)[:, counts - 1]
    means = sums / counts
    return means, (squares - counts * means * means) / (counts - 1)


@pytest.mark.parametrize("candidate_share", [0.5, 0.1])
def test_the_statistic_stays_valid_over_a_long_horizon_of_looks(candidate_share: float) -> None:
    """200 looks over 20,000 examples per run: the bound holds for any number of looks."""
    rng = np.random.default_rng(11)
    looks = np.arange(200, 20_001, 100)
    n_candidate = np.maximum((looks * candidate_share).astype(int), 2)
    n_baseline = looks - n_candidate
    shape = (RUNS, int(looks[-1]))
    mean_c, var_c = moments_at((rng.random(shape) < 0.8).astype(float), n_candidate)
    mean_b, var_b = moments_at((rng.random(shape) < 0.8).astype(float), n_baseline)
    sequential = naive = 0
    for run in range(RUNS):
        tests = [
            drop_test(
                ScoreMoments(int(n_candidate[j]), float(mean_c[run, j]), float(var_c[run, j])),
                ScoreMoments(int(n_baseline[j]), float(mean_b[run, j]), float(var_b[run, j])),
                higher_is_better=True,
                max_drop=0.0,
                mixture_scale=0.1,
            )
            for j in range(len(looks))
        ]
        sequential += any(t is not None and t.p_value <= 0.05 for t in tests)
        naive += any(t is not None and t.z > Z_ONE_SIDED_5_PERCENT for t in tests)
    assert sequential / RUNS <= binomial_ceiling(0.05, RUNS)
    assert naive / RUNS > 0.2


def test_a_first_step_of_zero_judges_a_shadow_on_both_arms() -> None:
    judge = classifier_judge(steps=(0.0, 50.0, 100.0), min_samples=10, interval_s=1.0)
    for _ in range(10):
        judge.observe_score(Arm.CANDIDATE, 1.0)  # the shadow's scoring copies
    waiting = judge.decide(now=2.0)
    assert waiting.action is Action.CONTINUE and "0/10 baseline" in waiting.reason
    for _ in range(10):
        judge.observe_score(Arm.BASELINE, 1.0)
    advance = judge.decide(now=2.0)
    assert advance.action is Action.ADVANCE and advance.evidence["step_percent"] == 0.0
    assert "advance to 50 %" in advance.reason
    with pytest.raises(InvalidInput, match="the first may be 0"):
        CanaryPolicy(steps=(5.0, 0.0, 100.0))


def test_a_restarted_step_waits_its_interval_and_samples_again_but_keeps_the_test() -> None:
    judge = classifier_judge(steps=(50.0, 100.0), min_samples=5, interval_s=10.0)
    for _ in range(5):
        judge.observe_score(Arm.CANDIDATE, 1.0)
        judge.observe_score(Arm.BASELINE, 1.0)
    assert judge.decide(now=11.0).action is Action.ADVANCE
    judge.restart_step(now=20.0)  # a resumed rollout
    again = judge.decide(now=21.0)
    assert again.action is Action.CONTINUE and again.evidence["step_samples_candidate"] == 0
    assert again.evidence["samples_candidate"] == 5 and judge.step == 0
