"""Streaming statistics of one model version: latency, prediction error, drift.

Pure and synchronous: every class here is fed one observation at a time and
can be read at any moment. :mod:`headwater.services.monitor.domain` keeps one
of each per model version, next to its rolling quality
(:class:`headwater.shared.quality.RollingQuality`, shared with the trainer).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

from river import drift

from headwater.shared.errors import InvalidInput
from headwater.shared.quality import QualityMetric

#: Upper bounds (ms) of the latency histogram buckets; +Inf is implicit.
DEFAULT_LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
)  # fmt: skip

Label = bool | int | str | float


class Task(StrEnum):
    """What a model predicts, which decides how its quality is measured."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"

    @property
    def quality_metric(self) -> QualityMetric:
        """The rolling quality of a model of this task: accuracy or mean absolute error.

        >>> Task.CLASSIFICATION.quality_metric, Task.REGRESSION.quality_metric
        ('accuracy', 'mae')
        """
        return "accuracy" if self is Task.CLASSIFICATION else "mae"


@dataclass(frozen=True)
class HistogramSnapshot:
    """A latency histogram at one moment, Prometheus-style (cumulative buckets).

    Attributes:
        buckets: ``(upper bound in ms, observations <= bound)`` pairs, ending with +Inf.
        count: Number of observations.
        sum_ms: Sum of the observations.

    """

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum_ms: float

    @property
    def mean_ms(self) -> float | None:
        """Mean latency, None before the first observation."""
        return self.sum_ms / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Estimate a quantile by linear interpolation inside its bucket.

        The estimate is what Prometheus' ``histogram_quantile`` computes; a
        quantile that falls in the +Inf bucket is reported as the last finite bound.

        >>> h = LatencyHistogram((10.0, 20.0))
        >>> for ms in (1.0, 2.0, 15.0, 18.0):
        ...     h.observe(ms)
        >>> h.snapshot().quantile(0.5)
        10.0
        >>> h.snapshot().quantile(0.75)
        15.0
        >>> LatencyHistogram((10.0,)).snapshot().quantile(0.5) is None
        True
        """
        if not 0.0 <= q <= 1.0:
            raise InvalidInput(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, cumulative in self.buckets:
            if cumulative >= rank and cumulative > below:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - below) / (cumulative - below)
            lower, below = bound, cumulative
        return lower


class LatencyHistogram:
    """Counts latencies into fixed buckets (``le`` semantics, as Prometheus).

    Args:
        bounds_ms: Strictly increasing, finite, positive upper bounds.

    >>> h = LatencyHistogram((1.0, 5.0))
    >>> for ms in (0.2, 1.0, 3.0, 9.0):
    ...     h.observe(ms)
    >>> h.snapshot()
    HistogramSnapshot(buckets=((1.0, 2), (5.0, 3), (inf, 4)), count=4, sum_ms=13.2)

    """

    def __init__(self, bounds_ms: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS) -> None:
        bounds = tuple(float(b) for b in bounds_ms)
        if not bounds or any(not math.isfinite(b) or b <= 0 for b in bounds):
            raise InvalidInput(f"latency buckets must be finite and positive, got {bounds}")
        if any(a >= b for a, b in pairwise(bounds)):
            raise InvalidInput(f"latency buckets must be strictly increasing, got {bounds}")
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum_ms = 0.0

    def observe(self, latency_ms: float) -> None:
        """Count one latency (ms); negative or non-finite values are rejected."""
        if not math.isfinite(latency_ms) or latency_ms < 0:
            raise InvalidInput(f"latency_ms must be finite and >= 0, got {latency_ms}")
        self._counts[bisect_left(self._bounds, latency_ms)] += 1
        self._sum_ms += latency_ms

    def snapshot(self) -> HistogramSnapshot:
        """The cumulative buckets, count and sum now."""
        cumulative, running = [], 0
        for bound, n in zip((*self._bounds, math.inf), self._counts, strict=True):
            running += n
            cumulative.append((bound, running))
        return HistogramSnapshot(tuple(cumulative), running, self._sum_ms)


def prediction_error(task: Task, label: Label, prediction: Label) -> float:
    """The error of one prediction: 0/1 for classification, absolute error for regression.

    >>> prediction_error(Task.CLASSIFICATION, "cat", "dog")
    1.0
    >>> prediction_error(Task.CLASSIFICATION, True, True)
    0.0
    >>> prediction_error(Task.REGRESSION, 3.0, 2.5)
    0.5
    >>> prediction_error(Task.REGRESSION, 3.0, "high")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: regression needs a numeric prediction, got 'high'
    """
    if task is Task.CLASSIFICATION:
        return 0.0 if label == prediction else 1.0
    for name, value in (("label", label), ("prediction", prediction)):
        if isinstance(value, bool | str) or not math.isfinite(value):
            raise InvalidInput(f"regression needs a numeric {name}, got {value!r}")
    return abs(float(label) - float(prediction))


@dataclass(frozen=True)
class DriftDetection:
    """A change a drift detector found in one signal.

    Attributes:
        signal: What was watched ("error"; later "feature.<name>", "prediction").
        mean_before: The detector's estimate of the signal's mean before the change.
        mean_after: Its estimate over the window kept after the change.
        window: Observations in the window kept after the change.
        alert: False when an alert for this signal was raised within the cool-down.

    """

    signal: str
    mean_before: float
    mean_after: float
    window: int
    alert: bool


class DriftWatch:
    """An ADWIN detector on one numeric signal, with an alert cool-down.

    Every detection is counted; only the first within ``cooldown_s`` asks for
    an alert, so a flapping signal does not flood the alerts topic.

    Args:
        signal: Name of the watched signal.
        delta: ADWIN's confidence; smaller detects fewer, surer changes.
        cooldown_s: Least time between two alerts of this watch.

    The error rate jumps from 0 to 1 at t=300 s and falls back at t=600 s:
    both changes are found, but the second falls within the cool-down.

    >>> w = DriftWatch("error", delta=0.002, cooldown_s=1000.0)
    >>> errors = [1.0 if 300 <= t < 600 else 0.0 for t in range(900)]
    >>> found = [w.update(e, now=float(t)) for t, e in enumerate(errors)]
    >>> [(d.alert, d.mean_before < d.mean_after) for d in found if d is not None]
    [(True, True), (False, False)]
    >>> w.detections, w.alerts
    (2, 1)

    """

    def __init__(self, signal: str, delta: float, cooldown_s: float) -> None:
        if not 0.0 < delta < 1.0:
            raise InvalidInput(f"drift delta must be within (0, 1), got {delta}")
        if cooldown_s < 0:
            raise InvalidInput(f"alert cool-down must be >= 0 s, got {cooldown_s}")
        self.signal = signal
        self.cooldown_s = cooldown_s
        self.detections = 0
        self.alerts = 0
        self._adwin = drift.ADWIN(delta=delta)
        self._last_alert_at: float | None = None

    def update(self, value: float, now: float) -> DriftDetection | None:
        """Feed one value observed at ``now`` (seconds); return the detection, if any."""
        before = float(self._adwin.estimation)
        self._adwin.update(value)
        if not self._adwin.drift_detected:
            return None
        self.detections += 1
        alert = self._last_alert_at is None or now - self._last_alert_at >= self.cooldown_s
        if alert:
            self.alerts += 1
            self._last_alert_at = now
        return DriftDetection(
            self.signal, before, float(self._adwin.estimation), int(self._adwin.width), alert
        )
