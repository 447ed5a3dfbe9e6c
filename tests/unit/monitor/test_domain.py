"""The monitor's pure core: rolling quality, coverage, latency buckets, drift alerts."""

from __future__ import annotations

import math
import random

import pytest

from headwater.services.monitor.domain import (
    ExampleObserved,
    MonitorConfig,
    MonitorState,
    PredictionObserved,
    Severity,
    Task,
)
from headwater.services.monitor.statistics import LatencyHistogram
from headwater.shared.errors import InvalidInput
from headwater.shared.quality import RollingQuality


def classified(model: str, version: int, label: object, prediction: object) -> ExampleObserved:
    return ExampleObserved(model, version, Task.CLASSIFICATION, label, prediction)  # type: ignore[arg-type]


def regressed(model: str, version: int, label: float, prediction: float) -> ExampleObserved:
    return ExampleObserved(model, version, Task.REGRESSION, label, prediction)


def test_rolling_accuracy_over_the_last_window_only() -> None:
    state = MonitorState(MonitorConfig(window_size=4))
    # correct, wrong, correct, correct, wrong, wrong: the window keeps the last four
    pairs = [(1, 1), (1, 0), (0, 0), (1, 1), (0, 1), ("a", "b")]
    for label, prediction in pairs:
        state.observe_example(classified("m", 1, label, prediction), now=0.0)
    v = state.snapshot().version("m", 1)
    assert v is not None
    assert v.rolling_accuracy == pytest.approx(2 / 4)  # (0,0) (1,1) right; (0,1) ("a","b") wrong
    assert v.labelled == 6
    assert v.window_fill == 4
    assert v.rolling_mae is None
    assert v.task is Task.CLASSIFICATION


def test_rolling_mae_hand_computed() -> None:
    state = MonitorState(MonitorConfig(window_size=3))
    for label, prediction in [(10.0, 12.0), (1.0, 1.5), (2.0, 1.0), (-4.0, -1.0)]:
        state.observe_example(regressed("r", 2, label, prediction), now=0.0)
    v = state.snapshot().version("r", 2)
    assert v is not None
    # the window holds |1-1.5|, |2-1|, |-4+1| = 0.5, 1, 3
    assert v.rolling_mae == pytest.approx((0.5 + 1.0 + 3.0) / 3)
    assert v.rolling_accuracy is None
    assert v.task is Task.REGRESSION


def test_versions_are_scored_separately() -> None:
    state = MonitorState(MonitorConfig())
    state.observe_example(classified("m", 1, True, True), now=0.0)
    state.observe_example(classified("m", 2, True, False), now=0.0)
    state.observe_example(classified("other", 1, "x", "y"), now=0.0)
    snap = state.snapshot()
    assert [(v.model, v.version) for v in snap.versions] == [("m", 1), ("m", 2), ("other", 1)]
    assert snap.version("m", 1).rolling_accuracy == 1.0  # type: ignore[union-attr]
    assert snap.version("m", 2).rolling_accuracy == 0.0  # type: ignore[union-attr]
    assert snap.model_names == ("m", "other")


def test_label_coverage_is_labelled_over_requests() -> None:
    state = MonitorState(MonitorConfig())
    for _ in range(8):
        state.observe_prediction(PredictionObserved("m", 1, latency_ms=1.0), now=0.0)
    assert state.snapshot().version("m", 1).label_coverage == 0.0  # type: ignore[union-attr]
    for _ in range(2):
        state.observe_example(classified("m", 1, 1, 1), now=0.0)
    v = state.snapshot().version("m", 1)
    assert v is not None
    assert (v.requests, v.labelled, v.label_coverage) == (8, 2, 0.25)


def test_coverage_unknown_before_any_request() -> None:
    state = MonitorState(MonitorConfig())
    state.observe_example(classified("m", 1, 1, 1), now=0.0)
    assert state.snapshot().version("m", 1).label_coverage is None  # type: ignore[union-attr]


def test_latency_buckets_are_cumulative_with_le_semantics() -> None:
    h = LatencyHistogram((1.0, 10.0, 100.0))
    for ms in (0.0, 1.0, 1.0001, 10.0, 99.0, 100.0, 100.5, 1e6):
        h.observe(ms)
    snap = h.snapshot()
    assert snap.buckets == ((1.0, 2), (10.0, 4), (100.0, 6), (math.inf, 8))
    assert snap.count == 8
    assert snap.sum_ms == pytest.approx(0.0 + 1.0 + 1.0001 + 10.0 + 99.0 + 100.0 + 100.5 + 1e6)
    assert snap.quantile(0.25) == pytest.approx(1.0)
    assert snap.quantile(1.0) == 100.0  # the +Inf bucket reports the last finite bound


@pytest.mark.parametrize("bounds", [(), (5.0, 5.0), (10.0, 1.0), (0.0, 1.0), (1.0, math.inf)])
def test_bad_latency_buckets_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(InvalidInput):
        LatencyHistogram(bounds)


def test_latencies_are_counted_per_version() -> None:
    state = MonitorState(MonitorConfig(latency_buckets_ms=(5.0, 50.0)))
    for ms in (1.0, 4.0, 20.0):
        state.observe_prediction(PredictionObserved("m", 3, latency_ms=ms), now=0.0)
    latency = state.snapshot().version("m", 3).latency  # type: ignore[union-attr]
    assert latency.buckets == ((5.0, 2), (50.0, 3), (math.inf, 3))
    assert latency.mean_ms == pytest.approx(25.0 / 3)


@pytest.mark.parametrize(
    ("prediction", "message"),
    [
        (PredictionObserved("", 1, 1.0), "no model"),
        (PredictionObserved("m", 0, 1.0), "no served version"),
        (PredictionObserved("m", 1, -1.0), "latency_ms"),
        (PredictionObserved("m", 1, math.nan), "latency_ms"),
    ],
)
def test_invalid_predictions_are_refused_and_not_counted(
    prediction: PredictionObserved, message: str
) -> None:
    state = MonitorState(MonitorConfig())
    with pytest.raises(InvalidInput, match=message):
        state.observe_prediction(prediction, now=0.0)
    assert state.snapshot().versions == ()


def test_example_without_prediction_is_counted_per_model_only() -> None:
    state = MonitorState(MonitorConfig())
    state.observe_example(ExampleObserved("m", 0, Task.CLASSIFICATION, True, None), now=0.0)
    snap = state.snapshot()
    assert snap.versions == ()
    assert snap.unscored_examples == {"m": 1}
    assert snap.model_names == ("m",)


def test_a_version_keeps_its_task() -> None:
    state = MonitorState(MonitorConfig())
    state.observe_example(classified("m", 1, True, True), now=0.0)
    with pytest.raises(InvalidInput, match="classification model"):
        state.observe_example(regressed("m", 1, 1.0, 2.0), now=0.0)
    with pytest.raises(InvalidInput, match="numeric prediction"):
        state.observe_example(ExampleObserved("r", 1, Task.REGRESSION, 1.0, "high"), now=0.0)
    assert state.snapshot().version("m", 1).labelled == 1  # type: ignore[union-attr]


def test_rolling_quality_refuses_an_empty_window() -> None:
    with pytest.raises(InvalidInput):
        RollingQuality(Task.CLASSIFICATION.quality_metric, window_size=0)


def test_oldest_version_is_forgotten_beyond_the_limit() -> None:
    state = MonitorState(MonitorConfig(max_versions_per_model=2))
    for version, now in [(1, 1.0), (2, 2.0), (1, 3.0), (3, 4.0)]:
        state.observe_prediction(PredictionObserved("m", version, 1.0), now=now)
    state.observe_prediction(PredictionObserved("other", 9, 1.0), now=0.0)
    snap = state.snapshot()
    assert [(v.model, v.version) for v in snap.versions] == [("m", 1), ("m", 3), ("other", 9)]
    assert snap.version("m", 1).requests == 2  # type: ignore[union-attr]


def _abrupt_error_change(state: MonitorState, start: float, n: int, rng: random.Random) -> list:
    """n/2 examples at 5 % error, then n/2 at 60 %, one per second from ``start``."""
    alerts = []
    for i in range(n):
        wrong = rng.random() < (0.05 if i < n // 2 else 0.6)
        example = classified("m", 1, True, not wrong)
        alerts += state.observe_example(example, now=start + i)
    return alerts


def test_drift_alert_fires_on_an_abrupt_error_change() -> None:
    state = MonitorState(MonitorConfig(alert_cooldown_s=10_000.0))
    alerts = _abrupt_error_change(state, start=0.0, n=1000, rng=random.Random(7))
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.model, alert.version, alert.kind) == ("m", 1, "drift.error")
    assert alert.severity is Severity.WARNING
    assert alert.values["mean_before"] < 0.2 < alert.values["mean_after"]
    assert 500 <= alert.raised_at < 1000  # after the change, not before
    assert "error rate" in alert.message
    v = state.snapshot().version("m", 1)
    assert v is not None and v.drift_detected >= 1 and v.alerts_raised == 1


def test_no_alert_on_a_stable_error_rate() -> None:
    state = MonitorState(MonitorConfig())
    rng = random.Random(3)
    alerts = []
    for i in range(2000):
        alerts += state.observe_example(classified("m", 1, 1, 0 if rng.random() < 0.1 else 1), i)
    assert alerts == []


def test_drift_alerts_respect_the_cooldown() -> None:
    state = MonitorState(MonitorConfig(alert_cooldown_s=5_000.0))
    rng = random.Random(11)
    first = _abrupt_error_change(state, start=0.0, n=1000, rng=rng)
    # the error falls back and rises again well within the cool-down: detected, not alerted
    within: list = []
    for i in range(1000):
        wrong = rng.random() < (0.05 if i < 500 else 0.6)
        within += state.observe_example(classified("m", 1, True, not wrong), now=1000.0 + i)
    v = state.snapshot().version("m", 1)
    assert v is not None
    assert len(first) == 1 and within == []
    assert v.drift_detected >= 2 and v.alerts_raised == 1
    # once the cool-down is over, the next change alerts again
    later = _abrupt_error_change(state, start=6000.0, n=1000, rng=rng)
    assert len(later) == 1


def test_regression_drift_alert_on_absolute_error() -> None:
    state = MonitorState(MonitorConfig())
    rng = random.Random(5)
    alerts = []
    for i in range(1000):
        noise = rng.gauss(0, 0.1 if i < 500 else 2.0)
        alerts += state.observe_example(regressed("r", 4, 1.0, 1.0 + noise), now=float(i))
    assert len(alerts) == 1
    assert "absolute error" in alerts[0].message


def test_a_rejected_example_creates_no_version() -> None:
    from headwater.services.monitor.domain import ExampleObserved, MonitorConfig, MonitorState
    from headwater.services.monitor.statistics import Task
    from headwater.shared.errors import InvalidInput

    state = MonitorState(MonitorConfig())
    bad = ExampleObserved(model="m", version=9, task=Task.REGRESSION, label=float("nan"),
                          prediction=1.0)
    with pytest.raises(InvalidInput):
        state.observe_example(bad, now=0.0)
    assert state.snapshot().versions == ()
