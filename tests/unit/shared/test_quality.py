"""The one rolling quality: River's rolling Accuracy and MAE, from restorable per-example scores."""

from __future__ import annotations

import random

import pytest
from river import metrics, utils

from headwater.shared.errors import InvalidInput
from headwater.shared.quality import RollingQuality, prediction_score


@pytest.mark.parametrize("window_size", [1, 3, 50])
def test_accuracy_is_exactly_rivers_rolling_accuracy(window_size: int) -> None:
    rng = random.Random(window_size)
    quality = RollingQuality("accuracy", window_size)
    reference = utils.Rolling(metrics.Accuracy, window_size=window_size)
    for _ in range(2_000):
        label, prediction = rng.choice([0, 1, "a", True]), rng.choice([0, 1, "a", False])
        quality.update(label, prediction)
        reference.update(label, prediction)
        assert quality.value == reference.obj.get()


@pytest.mark.parametrize("window_size", [1, 3, 50])
def test_mae_is_rivers_rolling_mae(window_size: int) -> None:
    rng = random.Random(window_size)
    quality = RollingQuality("mae", window_size)
    reference = utils.Rolling(metrics.MAE, window_size=window_size)
    for _ in range(2_000):
        label, prediction = rng.gauss(0.0, 10.0), rng.gauss(0.0, 10.0)
        assert quality.update(label, prediction) == abs(label - prediction)
        reference.update(label, prediction)
        assert quality.value == pytest.approx(reference.obj.get(), rel=1e-9)


def test_a_window_restores_from_its_scores() -> None:
    quality = RollingQuality("accuracy", window_size=4)
    for label, prediction in [(1, 1), (1, 0), (0, 0), (1, 1), (0, 1)]:
        quality.update(label, prediction)
    assert quality.scores == (0.0, 1.0, 1.0, 0.0)
    restored = RollingQuality("accuracy", window_size=4, scores=quality.scores)
    assert (restored.scores, restored.fill, restored.value) == (quality.scores, 4, 0.5)
    narrower = RollingQuality("accuracy", window_size=2, scores=quality.scores)
    assert narrower.scores == (1.0, 0.0)


def test_scores_of_each_metric() -> None:
    assert prediction_score("accuracy", "cat", "cat") == 1.0
    assert prediction_score("accuracy", 1, 2) == 0.0
    assert prediction_score("mae", 1, 3.5) == 2.5


@pytest.mark.parametrize(("metric", "window_size"), [("accuracy", 0), ("rmse", 10)])
def test_bad_arguments_are_refused(metric: str, window_size: int) -> None:
    with pytest.raises(InvalidInput):
        RollingQuality(metric, window_size)  # type: ignore[arg-type]
