"""The mixture SPRT behind the canary judge: moments, direction, edge cases, numerics."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from headwater.services.monitor.sequential import (
    RunningMoments,
    ScoreMoments,
    drop_test,
    mixture_log_likelihood_ratio,
)


def moments(scores: list[float]) -> ScoreMoments:
    running = RunningMoments()
    for s in scores:
        running.add(s)
    return running.moments()


def test_running_and_pooled_moments_match_numpy() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 2.0, 300).tolist(), rng.normal(3.0, 0.5, 40).tolist()
    ma, mb = moments(a), moments(b)
    assert ma.mean == pytest.approx(np.mean(a)) and ma.variance == pytest.approx(np.var(a, ddof=1))
    pooled = ma.pooled_with(mb)
    assert pooled.count == 340
    assert pooled.mean == pytest.approx(np.mean(a + b))
    assert pooled.variance == pytest.approx(np.var(a + b, ddof=1))
    assert moments([]).pooled_with(moments([])) == ScoreMoments(0, 0.0, 0.0)


def test_the_drop_points_the_right_way_for_accuracy_and_for_errors() -> None:
    low, high = moments([0.0, 1.0] * 200), moments([1.0, 1.0, 1.0, 0.0] * 100)
    accuracy = drop_test(low, high, higher_is_better=True, max_drop=0.0, mixture_scale=0.1)
    error = drop_test(low, high, higher_is_better=False, max_drop=0.0, mixture_scale=0.1)
    assert accuracy is not None and error is not None
    assert accuracy.drop == pytest.approx(0.25) and accuracy.p_value < 0.001  # lower accuracy
    assert error.drop == pytest.approx(-0.25) and error.p_value == 1.0  # lower error: better


def test_the_margin_absorbs_a_drop_within_it() -> None:
    candidate, baseline = moments([1.0] * 790 + [0.0] * 210), moments([1.0] * 800 + [0.0] * 200)
    test = drop_test(candidate, baseline, higher_is_better=True, max_drop=0.01, mixture_scale=0.1)
    assert test is not None and test.drop == pytest.approx(0.01) and test.z == pytest.approx(0.0)
    assert test.p_value == 1.0


def test_no_evidence_without_two_scores_per_arm_or_any_variance() -> None:
    one, many = moments([1.0]), moments([1.0, 0.0] * 10)
    assert drop_test(one, many, higher_is_better=True, max_drop=0.0, mixture_scale=0.1) is None
    constant = moments([1.0] * 50)
    assert (
        drop_test(constant, constant, higher_is_better=True, max_drop=0.0, mixture_scale=0.1)
        is None
    )
    wrong = moments([0.0] * 50)
    test = drop_test(wrong, constant, higher_is_better=True, max_drop=0.0, mixture_scale=0.1)
    assert test is not None and test.p_value < 1e-4  # all wrong against all right concludes


@pytest.mark.parametrize("r", [0.5, 8.0, 1000.0])
def test_the_ratio_is_smooth_across_the_tail_switch_and_grows_with_z(r: float) -> None:
    # z * sqrt(r / (1 + r)) = -30 is where log Φ switches to its asymptotic expansion.
    z_switch = -30.0 / math.sqrt(r / (1 + r))
    below, above = (mixture_log_likelihood_ratio(z_switch + d, r) for d in (-1e-6, 1e-6))
    assert below == pytest.approx(above, abs=1e-4)
    values = [mixture_log_likelihood_ratio(z, r) for z in np.linspace(-60, 10, 200)]
    assert all(math.isfinite(v) for v in values)
    assert all(b > a for a, b in pairwise(values))
