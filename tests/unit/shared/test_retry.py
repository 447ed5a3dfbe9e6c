"""Backoff: the one retry delay of every loop that tries again."""

from __future__ import annotations

import math
import random

import pytest

from headwater.shared.retry import Backoff


def test_delays_double_from_the_start_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.05, max_s=0.3)
    assert [backoff.delay_s(a) for a in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]


def test_another_factor_grows_by_it() -> None:
    assert [Backoff(initial_s=1.0, factor=3.0).delay_s(a) for a in range(3)] == [1.0, 3.0, 9.0]


def test_jitter_draws_between_the_fraction_and_the_full_capped_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[tuple[float, float]] = []

    def lowest(a: float, b: float) -> float:
        drawn.append((a, b))
        return a

    monkeypatch.setattr(random, "uniform", lowest)
    backoff = Backoff(initial_s=0.1, max_s=2.0, jitter=0.5)
    assert backoff.delay_s(0) == 0.05
    assert backoff.delay_s(10) == 1.0  # half of the cap, not of 102.4
    assert drawn == [(0.5, 1.0), (0.5, 1.0)]


def test_a_very_late_attempt_does_not_overflow() -> None:
    assert Backoff(initial_s=0.1, max_s=2.0, jitter=0.5).delay_s(5_000) <= 2.0
    assert Backoff(initial_s=0.1).delay_s(5_000) == math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": 0.0},
        {"initial_s": 0.1, "max_s": -1.0},
        {"initial_s": 0.1, "factor": 0.9},
        {"initial_s": 0.1, "jitter": 1.5},
    ],
)
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_it_is_a_frozen_value() -> None:
    backoff = Backoff(initial_s=0.1)
    with pytest.raises(AttributeError):
        backoff.initial_s = 1.0  # type: ignore[misc]
    assert backoff == Backoff(0.1, math.inf, 2.0, 0.0)
