"""The monitor's state: streaming metrics per model version, and the alerts they raise.

Pure: no I/O, no clock (callers pass ``now`` in seconds). The stream adapters
feed :class:`MonitorState` with decoded observations; the exporter and the
JSON API read immutable :class:`MonitorSnapshot` values from it.

>>> state = MonitorState(MonitorConfig(window_size=2))
>>> state.observe_prediction(PredictionObserved("churn", 1, latency_ms=3.0), now=0.0)
>>> state.observe_prediction(PredictionObserved("churn", 1, latency_ms=7.0), now=0.0)
>>> state.observe_example(
...     ExampleObserved("churn", 1, Task.CLASSIFICATION, label=True, prediction=False), now=1.0)
()
>>> v = state.snapshot().version("churn", 1)
>>> v.requests, v.labelled, v.label_coverage, v.rolling_accuracy, v.rolling_mae
(2, 1, 0.5, 0.0, None)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from headwater.services.monitor.statistics import (
    DEFAULT_LATENCY_BUCKETS_MS,
    DriftDetection,
    DriftWatch,
    HistogramSnapshot,
    Label,
    LatencyHistogram,
    Task,
    prediction_error,
)
from headwater.shared.errors import InvalidInput
from headwater.shared.quality import RollingQuality

__all__ = [
    "AlertRaised",
    "ExampleObserved",
    "Label",
    "MonitorConfig",
    "MonitorSnapshot",
    "MonitorState",
    "PredictionObserved",
    "Severity",
    "Task",
    "VersionSnapshot",
]


class Severity(StrEnum):
    """How urgent an alert is (mirrors ``headwater.events.v1.Severity``)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor measures.

    Attributes:
        window_size: Labelled examples in the rolling accuracy / MAE window.
        drift_delta: ADWIN confidence of the error drift detector.
        alert_cooldown_s: Least time between two alerts of one kind for one version.
        latency_buckets_ms: Upper bounds of the latency histogram.
        max_versions_per_model: Versions tracked per model; the least recently
            seen is forgotten first (a learner checkpoints often).

    """

    window_size: int = 200
    drift_delta: float = 0.002
    alert_cooldown_s: float = 300.0
    latency_buckets_ms: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS_MS
    max_versions_per_model: int = 50

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise InvalidInput(f"window_size must be >= 1, got {self.window_size}")
        if self.max_versions_per_model < 1:
            raise InvalidInput(
                f"max_versions_per_model must be >= 1, got {self.max_versions_per_model}"
            )


@dataclass(frozen=True)
class PredictionObserved:
    """One prediction a gateway served (from a ``PredictionEvent``).

    ``route_role`` and ``predicted_at`` are as :class:`ExampleObserved`'s.
    """

    model: str
    version: int
    latency_ms: float
    prediction_id: str = ""
    route_role: str = ""
    predicted_at: float | None = None


@dataclass(frozen=True)
class ExampleObserved:
    """One labelled example (from a ``LabeledExample``).

    Attributes:
        model: Model name.
        version: The version that served the prediction (0 when none did).
        task: Classification or regression, from the label's kind.
        label: The ground truth.
        prediction: What the served version predicted; None for examples that
            did not come from a prediction (pure training streams), which
            cannot score a version and are only counted per model.
        example_id: The example's id, for logs.
        route_role: The role of the route that served it (``primary``, ``canary``,
            ``shadow`` for a shadow's scoring copy; empty when not said).
        predicted_at: When the served prediction was made (seconds), None when not said.

    """

    model: str
    version: int
    task: Task
    label: Label
    prediction: Label | None
    example_id: str = ""
    route_role: str = ""
    predicted_at: float | None = None


@dataclass(frozen=True)
class AlertRaised:
    """Something the monitor noticed about one model version."""

    model: str
    version: int
    kind: str
    severity: Severity
    message: str
    values: Mapping[str, float]
    raised_at: float


@dataclass(frozen=True)
class VersionSnapshot:
    """The metrics of one model version at one moment.

    ``label_coverage`` is labelled / requests (None before the first request;
    it can exceed 1 when labels arrive for predictions made before the
    monitor started). ``rolling_accuracy`` is set for classifiers and
    ``rolling_mae`` for regressors, each None until a labelled example arrives.
    """

    model: str
    version: int
    task: Task | None
    requests: int
    latency: HistogramSnapshot
    labelled: int
    label_coverage: float | None
    window_size: int
    window_fill: int
    rolling_accuracy: float | None
    rolling_mae: float | None
    drift_detected: int
    alerts_raised: int
    last_seen_at: float


@dataclass(frozen=True)
class MonitorSnapshot:
    """Everything the monitor knows at one moment.

    Attributes:
        versions: One entry per tracked version, ordered by model then version.
        unscored_examples: Per model, labelled examples without a served prediction.
        rejected: Per source topic, events that could not be used (sent to dead-letter).

    """

    versions: tuple[VersionSnapshot, ...]
    unscored_examples: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    rejected: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models with at least one tracked version or example, sorted."""
        return tuple(sorted({v.model for v in self.versions} | set(self.unscored_examples)))

    def model(self, name: str) -> tuple[VersionSnapshot, ...]:
        """The tracked versions of one model (empty when unknown)."""
        return tuple(v for v in self.versions if v.model == name)

    def version(self, model: str, version: int) -> VersionSnapshot | None:
        """One version's snapshot, None when it is not tracked."""
        return next((v for v in self.model(model) if v.version == version), None)


class _VersionTracker:
    """The mutable metrics of one version; only :class:`MonitorState` touches it."""

    def __init__(self, model: str, version: int, config: MonitorConfig, now: float) -> None:
        self.model = model
        self.version = version
        self.config = config
        self.requests = 0
        self.labelled = 0
        self.latency = LatencyHistogram(config.latency_buckets_ms)
        self.task: Task | None = None
        self.quality: RollingQuality | None = None
        self.error_drift = DriftWatch("error", config.drift_delta, config.alert_cooldown_s)
        self.last_seen_at = now

    def score(self, example: ExampleObserved, now: float) -> DriftDetection | None:
        """Add one labelled prediction to the rolling quality and the drift detector."""
        if self.task is not None and self.task is not example.task:
            raise InvalidInput(
                f"{self.model} v{self.version} is a {self.task} model, got a {example.task} label"
            )
        assert example.prediction is not None
        error = prediction_error(example.task, example.label, example.prediction)  # raises first
        quality = self.quality or RollingQuality(
            example.task.quality_metric, self.config.window_size
        )
        quality.update(example.label, example.prediction)
        self.task, self.quality = example.task, quality
        self.labelled += 1
        return self.error_drift.update(error, now)

    def snapshot(self) -> VersionSnapshot:
        quality, task = self.quality, self.task
        value = quality.value if quality is not None else None
        return VersionSnapshot(
            model=self.model,
            version=self.version,
            task=task,
            requests=self.requests,
            latency=self.latency.snapshot(),
            labelled=self.labelled,
            label_coverage=self.labelled / self.requests if self.requests else None,
            window_size=self.config.window_size,
            window_fill=quality.fill if quality is not None else 0,
            rolling_accuracy=value if task is Task.CLASSIFICATION else None,
            rolling_mae=value if task is Task.REGRESSION else None,
            drift_detected=self.error_drift.detections,
            alerts_raised=self.error_drift.alerts,
            last_seen_at=self.last_seen_at,
        )


class MonitorState:
    """Streaming metrics of every model version the monitor has seen.

    Args:
        config: Window, drift and retention parameters.

    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self._versions: dict[tuple[str, int], _VersionTracker] = {}
        self._unscored: dict[str, int] = {}
        self._rejected: dict[str, int] = {}

    def observe_prediction(self, prediction: PredictionObserved, now: float) -> None:
        """Count one served prediction and its latency.

        Raises:
            InvalidInput: The model is empty, the version not positive or the latency invalid.

        """
        _check_key(prediction.model, prediction.version)
        latency = prediction.latency_ms
        if not math.isfinite(latency) or latency < 0:
            raise InvalidInput(f"latency_ms must be finite and >= 0, got {latency}")
        tracker = self._tracker(prediction.model, prediction.version, now)
        tracker.latency.observe(prediction.latency_ms)
        tracker.requests += 1

    def observe_example(self, example: ExampleObserved, now: float) -> tuple[AlertRaised, ...]:
        """Score one labelled example against the version that served it.

        Returns:
            The alerts this example raised (at most one per drift detector).

        Raises:
            InvalidInput: The example cannot be attributed or scored (no model,
                no served version, a label of the wrong kind for the version).

        """
        if not example.model:
            raise InvalidInput("labelled example has no model")
        if example.prediction is None:
            self._unscored[example.model] = self._unscored.get(example.model, 0) + 1
            return ()
        _check_key(example.model, example.version)
        key = (example.model, example.version)
        tracker = self._versions.get(key) or _VersionTracker(*key, self.config, now)
        detection = tracker.score(example, now)  # a rejected example leaves no version behind
        self._keep(tracker, now)
        if detection is None or not detection.alert:
            return ()
        return (_drift_alert(tracker, detection, now),)

    def record_rejected(self, topic: str) -> None:
        """Count one event of ``topic`` that was sent to dead-letter."""
        self._rejected[topic] = self._rejected.get(topic, 0) + 1

    def snapshot(self) -> MonitorSnapshot:
        """An immutable copy of every metric now."""
        versions = tuple(self._versions[key].snapshot() for key in sorted(self._versions))
        return MonitorSnapshot(
            versions=versions,
            unscored_examples=MappingProxyType(dict(self._unscored)),
            rejected=MappingProxyType(dict(self._rejected)),
        )

    def _tracker(self, model: str, version: int, now: float) -> _VersionTracker:
        key = (model, version)
        return self._keep(self._versions.get(key) or _VersionTracker(*key, self.config, now), now)

    def _keep(self, tracker: _VersionTracker, now: float) -> _VersionTracker:
        key = (tracker.model, tracker.version)
        if key not in self._versions:
            self._forget_oldest_version_of(tracker.model)
            self._versions[key] = tracker
        tracker.last_seen_at = max(tracker.last_seen_at, now)
        return tracker

    def _forget_oldest_version_of(self, model: str) -> None:
        mine = [t for t in self._versions.values() if t.model == model]
        if len(mine) >= self.config.max_versions_per_model:
            oldest = min(mine, key=lambda t: (t.last_seen_at, t.version))
            del self._versions[(oldest.model, oldest.version)]


def _check_key(model: str, version: int) -> None:
    if not model:
        raise InvalidInput("event has no model")
    if version < 1:
        raise InvalidInput(f"event for {model} has no served version (got {version})")


def _drift_alert(tracker: _VersionTracker, found: DriftDetection, now: float) -> AlertRaised:
    measure = "error rate" if _is_classifier(tracker) else "absolute error"
    return AlertRaised(
        model=tracker.model,
        version=tracker.version,
        kind=f"drift.{found.signal}",
        severity=Severity.WARNING,
        message=(
            f"{tracker.model} v{tracker.version}: mean {measure} changed from "
            f"{found.mean_before:.3f} to {found.mean_after:.3f} (ADWIN, {found.window} recent)"
        ),
        values=MappingProxyType(
            {
                "mean_before": found.mean_before,
                "mean_after": found.mean_after,
                "window": float(found.window),
                "detections": float(tracker.error_drift.detections),
            }
        ),
        raised_at=now,
    )


def _is_classifier(tracker: _VersionTracker) -> bool:
    return tracker.task is Task.CLASSIFICATION
