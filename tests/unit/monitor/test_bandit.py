"""Bandit routing: convergence, exploration floor, determinism, weights that sum to 1."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping

import pytest

from headwater.services.monitor.bandit import BanditRouter
from headwater.services.monitor.statistics import Task
from headwater.shared.errors import InvalidInput


def route(weights: Mapping[int, float], rng: random.Random) -> int:
    """Pick a version by its weight, as the gateway's bucket split does."""
    bucket, upper = rng.random(), 0.0
    for version, weight in weights.items():
        upper += weight
        if bucket < upper:
            return version
    return next(reversed(weights))


def serve(
    router: BanditRouter,
    score: Callable[[int], float],
    rng: random.Random,
    requests: int,
    every: int = 100,
) -> list[Mapping[int, float]]:
    """Route by the current weights, learn each label, re-weigh every ``every`` requests."""
    history = [router.weights()]
    for i in range(1, requests + 1):
        version = route(history[-1], rng)
        router.observe(version, score(version))
        if i % every == 0:
            history.append(router.weights())
    return history


def bernoulli_arms(p: Mapping[int, float], rng: random.Random) -> Callable[[int], float]:
    return lambda version: float(rng.random() < p[version])


def gaussian_errors(sd: Mapping[int, float], rng: random.Random) -> Callable[[int], float]:
    return lambda version: abs(rng.gauss(0.0, sd[version]))


def test_converges_to_the_better_version_and_keeps_exploring() -> None:
    rng = random.Random(1)
    router = BanditRouter([1, 2], floor=0.05, seed=7)
    history = serve(router, bernoulli_arms({1: 0.5, 2: 0.8}, rng), rng, requests=3000)
    assert history[-1][2] > 0.8
    assert all(w >= 0.05 - 1e-12 for weights in history for w in weights.values())
    late = router.snapshot()
    assert late.samples[1] > 0.05 * 3000 * 0.5  # the worse version still gets its floor
    assert late.mean_reward[2] == pytest.approx(0.8, abs=0.05)
    assert late.weights[2] > 0.8 and late.p_best[2] > 0.9
    assert set(late.evidence) == {
        f"{name}_v{v}" for name in ("weight", "p_best", "samples", "mean_reward") for v in (1, 2)
    }


@pytest.mark.parametrize("seed", range(5))
def test_converges_whatever_the_seed(seed: int) -> None:
    rng = random.Random(100 + seed)
    router = BanditRouter([3, 4], seed=seed)
    history = serve(router, bernoulli_arms({3: 0.8, 4: 0.5}, rng), rng, requests=2000)
    assert history[-1][3] > 0.8


def test_weights_sum_to_one_and_respect_the_floor_for_three_versions() -> None:
    rng = random.Random(2)
    router = BanditRouter([1, 2, 3], floor=0.1, seed=3)
    history = serve(router, bernoulli_arms({1: 0.6, 2: 0.7, 3: 0.9}, rng), rng, requests=2000)
    for weights in history:
        assert sum(weights.values()) == pytest.approx(1.0)
        assert min(weights.values()) >= 0.1 - 1e-12
    assert max(history[-1], key=history[-1].__getitem__) == 3
    no_floor = BanditRouter([1, 2], floor=0.0, seed=0)
    assert sum(no_floor.weights().values()) == pytest.approx(1.0)
    everything_floor = BanditRouter([1, 2, 3, 4], floor=0.25, seed=0)
    assert dict(everything_floor.weights()) == {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}


def observed(seed: int, task: Task = Task.CLASSIFICATION) -> list[Mapping[int, float]]:
    rng = random.Random(9)  # the same stream every time; only the router's seed varies
    router = BanditRouter([1, 2], task, seed=seed, draws=200)
    if task is Task.REGRESSION:
        return serve(router, gaussian_errors({1: 1.0, 2: 1.1}, rng), rng, requests=400, every=50)
    return serve(router, bernoulli_arms({1: 0.55, 2: 0.6}, rng), rng, requests=400, every=50)


@pytest.mark.parametrize("task", [Task.CLASSIFICATION, Task.REGRESSION])
def test_deterministic_for_a_seed(task: Task) -> None:
    assert observed(seed=5, task=task) == observed(seed=5, task=task)
    assert observed(seed=5, task=task) != observed(seed=6, task=task)


def test_no_evidence_means_even_weights_up_to_monte_carlo_error() -> None:
    weights = BanditRouter([1, 2, 3], seed=1, draws=4000).weights()
    spread = 1 - 3 * 0.05
    for w in weights.values():
        assert w == pytest.approx(0.05 + spread / 3, abs=4 * spread * 0.5 / math.sqrt(4000))


def test_regression_rewards_lower_absolute_errors() -> None:
    rng = random.Random(4)
    router = BanditRouter([1, 2], Task.REGRESSION, seed=2)
    errors = gaussian_errors({1: 1.0, 2: 2.0}, rng)  # version 1's errors are half as large
    history = serve(router, errors, rng, requests=3000)
    assert history[-1][1] > 0.8
    snapshot = router.snapshot()
    assert snapshot.mean_reward[1] is not None and snapshot.mean_reward[2] is not None
    assert snapshot.mean_reward[1] > snapshot.mean_reward[2]
    assert all(0.0 < m <= 1.0 for m in snapshot.mean_reward.values() if m is not None)
    perfect = BanditRouter([1], Task.REGRESSION)
    perfect.observe(1, 0.0)  # a zero error with zero scale so far is a full reward
    assert perfect.snapshot().mean_reward[1] == 1.0


def test_inputs_are_validated() -> None:
    with pytest.raises(InvalidInput, match="floor"):
        BanditRouter([1, 2, 3], floor=0.4)
    with pytest.raises(InvalidInput, match="distinct"):
        BanditRouter([1, 1])
    with pytest.raises(InvalidInput, match="distinct"):
        BanditRouter([])
    router = BanditRouter([1, 2])
    with pytest.raises(InvalidInput, match="not routed"):
        router.observe(3, 1.0)
    with pytest.raises(InvalidInput, match="0 or 1"):
        router.observe(1, 0.5)
    with pytest.raises(InvalidInput, match="finite"):
        BanditRouter([1], Task.REGRESSION).observe(1, math.nan)
