"""The rolling quality of a model's predictions: accuracy or MAE over its last examples.

One implementation for the trainer's progressive validation and the monitor's
live quality. Every labelled prediction gets a per-example score (1.0 or 0.0
for a right or wrong label, the absolute error of a value), and the quality is
the mean score over the last ``window_size`` of them. The scores are kept, so a
window is saved as its scores and restored from them.

>>> q = RollingQuality("accuracy", window_size=3)
>>> for y, p in [(1, 1), (1, 0), (0, 0), (1, 1)]:
...     _ = q.update(y, p)
>>> round(q.value, 4), q.fill  # the first (correct) example has left the window
(0.6667, 3)
>>> q.scores
(0.0, 1.0, 1.0)
>>> RollingQuality("accuracy", window_size=3, scores=q.scores).value == q.value
True
>>> r = RollingQuality("mae", window_size=2)
>>> r.value is None
True
>>> for y, p in [(1.0, 2.0), (3.0, 3.5), (0.0, 1.0)]:
...     _ = r.update(y, p)
>>> r.value
0.75
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from river import stats, utils

from headwater.shared.errors import InvalidInput

QualityMetric: TypeAlias = Literal["accuracy", "mae"]


def prediction_score(metric: QualityMetric, label: Any, prediction: Any) -> float:
    """The score of one prediction: 1/0 for a right/wrong label (accuracy), else its absolute error.

    The inputs are not checked: a caller that takes them from the outside
    validates them first.

    >>> prediction_score("accuracy", "cat", "dog"), prediction_score("accuracy", True, True)
    (0.0, 1.0)
    >>> prediction_score("mae", 3.0, 2.5)
    0.5
    """
    if metric == "accuracy":
        return 1.0 if label == prediction else 0.0
    return abs(float(label) - float(prediction))


class RollingQuality:
    """Accuracy or MAE over the last ``window_size`` scored predictions.

    The window is River's ``utils.Rolling`` over a ``stats.Sum`` of the scores,
    and the value is that sum over the window's fill: sums of 0/1 scores are
    exact, so the accuracy is exactly the ratio River's ``metrics.Accuracy`` gives.

    Args:
        metric: ``accuracy`` (classification) or ``mae`` (regression).
        window_size: How many of the most recent scores count.
        scores: Scores to start from, oldest first (a saved window); only the
            last ``window_size`` are kept.

    Raises:
        InvalidInput: An unknown metric or a window smaller than one.

    """

    def __init__(
        self, metric: QualityMetric, window_size: int, scores: Sequence[float] = ()
    ) -> None:
        if metric not in ("accuracy", "mae"):
            raise InvalidInput(f"quality metric must be accuracy or mae, got {metric!r}")
        if window_size < 1:
            raise InvalidInput(f"window_size must be >= 1, got {window_size}")
        self.metric: QualityMetric = metric
        self.window_size = window_size
        self._rolling = utils.Rolling(stats.Sum, window_size=window_size)
        for score in scores[-window_size:]:
            self.add(score)

    def update(self, label: Any, prediction: Any) -> float:
        """Score one labelled prediction (see :func:`prediction_score`), add it, return it."""
        score = prediction_score(self.metric, label, prediction)
        self.add(score)
        return score

    def add(self, score: float) -> None:
        """Add one per-example score; the oldest leaves a full window."""
        self._rolling.update(score)

    @property
    def scores(self) -> tuple[float, ...]:
        """The scores in the window, oldest first."""
        return tuple(args[0] for args, _ in self._rolling.window)

    @property
    def fill(self) -> int:
        """How many scores are in the window now (at most ``window_size``)."""
        return len(self._rolling.window)

    @property
    def value(self) -> float | None:
        """The mean score over the window, None while it is empty."""
        fill = self.fill
        return self._rolling.obj.get() / fill if fill else None
