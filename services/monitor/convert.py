"""Protobuf events and rollouts ⇄ the monitor's domain values, and snapshots as JSON.

>>> from headwater.shared.features import target_to_proto
>>> event = events_pb2.LabeledExample(example_id="e1", model="churn", served_version=2)
>>> event.label.CopyFrom(target_to_proto(True))
>>> event.prediction.CopyFrom(target_to_proto(False))
>>> example_from_proto(event)  # doctest: +NORMALIZE_WHITESPACE
ExampleObserved(model='churn', version=2, task=<Task.CLASSIFICATION: 'classification'>,
                label=True, prediction=False, example_id='e1', route_role='',
                predicted_at=None)
>>> example_from_proto(events_pb2.LabeledExample(example_id="e2", model="churn"))
Traceback (most recent call last):
...
headwater.shared.errors.InvalidInput: labelled example 'e2' has no label
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from headwater.services.monitor.domain import (
    AlertRaised,
    ExampleObserved,
    MonitorSnapshot,
    PredictionObserved,
    Severity,
    Task,
    VersionSnapshot,
)
from headwater.services.monitor.rollout_controller import (
    Blocked,
    Look,
    RolloutsSnapshot,
    RolloutView,
)
from headwater.services.monitor.rollouts import JudgingPolicy, TrackedRollout
from headwater.shared import enums
from headwater.shared.errors import InvalidInput, ModelNotFound
from headwater.shared.features import target_from_proto
from headwater.shared.pb import events_pb2, registry_pb2

_SEVERITY = {
    Severity.INFO: events_pb2.SEVERITY_INFO,
    Severity.WARNING: events_pb2.SEVERITY_WARNING,
    Severity.CRITICAL: events_pb2.SEVERITY_CRITICAL,
}


def prediction_from_proto(event: events_pb2.PredictionEvent) -> PredictionObserved:
    """The monitor's view of a ``PredictionEvent`` (checked by :class:`MonitorState`)."""
    return PredictionObserved(
        model=event.model,
        version=event.version,
        latency_ms=event.latency_ms,
        prediction_id=event.prediction_id,
        route_role=enums.ROLES.get(event.route_role, ""),
        predicted_at=_seconds(event.predicted_at) if event.HasField("predicted_at") else None,
    )


def example_from_proto(event: events_pb2.LabeledExample) -> ExampleObserved:
    """The monitor's view of a ``LabeledExample``.

    A ``value`` label (a double) makes it a regression example; a bool, int or
    string label a classification one. An example without a prediction (a
    pure training stream) keeps ``prediction=None``.

    Raises:
        InvalidInput: The example has no label.

    """
    if not event.HasField("label") or event.label.WhichOneof("kind") is None:
        raise InvalidInput(f"labelled example {event.example_id!r} has no label")
    label = target_from_proto(event.label)
    has_prediction = event.HasField("prediction") and event.prediction.WhichOneof("kind")
    return ExampleObserved(
        model=event.model,
        version=event.served_version,
        task=Task.REGRESSION if isinstance(label, float) else Task.CLASSIFICATION,
        label=label,
        prediction=target_from_proto(event.prediction) if has_prediction else None,
        example_id=event.example_id,
        route_role=enums.ROLES.get(event.route_role, ""),
        predicted_at=_seconds(event.predicted_at) if event.HasField("predicted_at") else None,
    )


def rollout_from_proto(rollout: registry_pb2.Rollout) -> TrackedRollout:
    """The monitor's copy of a registry ``Rollout`` (the registry fills every policy field).

    >>> proto = registry_pb2.Rollout(id="r1", model="churn", baseline_version=1,
    ...     candidate_version=2, strategy=registry_pb2.ROLLOUT_STRATEGY_CANARY,
    ...     state=registry_pb2.ROLLOUT_STATE_PROGRESSING, revision=3, step=1)
    >>> proto.policy.step_percents.extend([50, 100])
    >>> proto.step_started_at.FromSeconds(1_700_000_000)
    >>> tracked = rollout_from_proto(proto)
    >>> tracked.describe(), tracked.state, tracked.step, tracked.step_started_at
    ('canary of v2 over v1', 'progressing', 1, 1700000000.0)
    >>> tracked.policy.step_percents, tracked.policy.min_samples
    ((50.0, 100.0), 0)
    """
    policy = rollout.policy
    return TrackedRollout(
        rollout_id=rollout.id,
        model=rollout.model,
        strategy=enums.STRATEGIES.get(rollout.strategy, ""),
        state=enums.ROLLOUT_STATES.get(rollout.state, ""),
        baseline_version=rollout.baseline_version,
        candidate_version=rollout.candidate_version,
        step=rollout.step,
        revision=rollout.revision,
        created_at=_seconds(rollout.created_at),
        step_started_at=_seconds(rollout.step_started_at),
        policy=JudgingPolicy(
            step_percents=tuple(policy.step_percents),
            interval_s=policy.interval_s,
            min_samples=policy.min_samples,
            max_drop=policy.max_drop,
            alpha=policy.alpha,
            bandit_floor_weight=policy.bandit_floor_weight,
            max_latency_ratio=policy.max_latency_ratio,
        ),
    )


def rollout_to_json(view: RolloutView) -> dict[str, Any]:
    """What the monitor knows of a model's rollout, as JSON (in ``/v1/models/{name}``)."""
    rollout = view.rollout
    return {
        "id": rollout.rollout_id,
        "strategy": rollout.strategy,
        "state": rollout.state,
        "baseline_version": rollout.baseline_version,
        "candidate_version": rollout.candidate_version,
        "step": rollout.step,
        "revision": rollout.revision,
        "judged": view.judged,
        "acting": view.acting,
        "note": view.note,
        "latest": _look_to_json(view.latest),
        "last_decision": _look_to_json(view.last_decision),
        "blocked": _blocked_to_json(view.blocked),
    }


def _blocked_to_json(blocked: Blocked | None) -> dict[str, Any] | None:
    if blocked is None:
        return None
    return {
        "action": blocked.action.value,
        "message": blocked.message,
        "since": blocked.since,
        "retry_at": blocked.retry_at,
        "refusals": blocked.refusals,
    }


def _look_to_json(look: Look | None) -> dict[str, Any] | None:
    if look is None:
        return None
    decision = look.decision
    return {
        "action": decision.action.value,
        "reason": decision.reason,
        "evidence": {name: _finite(value) for name, value in decision.evidence.items()},
        "at": look.at,
    }


def _seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def alert_to_proto(alert: AlertRaised, alert_id: str | None = None) -> events_pb2.Alert:
    """An ``Alert`` event for the alerts topic (a fresh id unless one is given).

    >>> from headwater.services.monitor.domain import Severity
    >>> alert = AlertRaised("churn", 3, "drift.error", Severity.WARNING, "changed",
    ...                     {"mean_after": 0.4}, raised_at=1_700_000_000.25)
    >>> event = alert_to_proto(alert, alert_id="a1")
    >>> event.severity == events_pb2.SEVERITY_WARNING, event.raised_at.nanos
    (True, 250000000)
    """
    seconds = math.floor(alert.raised_at)
    nanos = min(round((alert.raised_at - seconds) * 1e9), 999_999_999)
    raised_at = Timestamp(seconds=seconds, nanos=nanos)
    return events_pb2.Alert(
        alert_id=alert_id or uuid.uuid4().hex,
        model=alert.model,
        version=alert.version,
        kind=alert.kind,
        severity=_SEVERITY[alert.severity],
        message=alert.message,
        values=dict(alert.values),
        raised_at=raised_at,
    )


def version_to_json(v: VersionSnapshot) -> dict[str, Any]:
    """One version's metrics as a JSON object (what ``/v1/models`` returns)."""
    latency = v.latency
    return {
        "version": v.version,
        "task": v.task.value if v.task is not None else None,
        "requests": v.requests,
        "labelled": v.labelled,
        "label_coverage": _finite(v.label_coverage),
        "window_size": v.window_size,
        "window_fill": v.window_fill,
        "rolling_accuracy": _finite(v.rolling_accuracy),
        "rolling_mae": _finite(v.rolling_mae),
        "drift_detected": v.drift_detected,
        "alerts_raised": v.alerts_raised,
        "last_seen_at": v.last_seen_at,
        "latency_ms": {
            "count": latency.count,
            "sum": latency.sum_ms,
            "mean": _finite(latency.mean_ms),
            "p50": _finite(latency.quantile(0.5)),
            "p95": _finite(latency.quantile(0.95)),
            "p99": _finite(latency.quantile(0.99)),
            "buckets": [
                {"le": "+Inf" if math.isinf(bound) else bound, "count": count}
                for bound, count in latency.buckets
            ],
        },
    }


def model_to_json(
    snapshot: MonitorSnapshot, name: str, rollouts: RolloutsSnapshot | None = None
) -> dict[str, Any]:
    """One model's versions, and its rollout (null when none is known), as a JSON object.

    Raises:
        ModelNotFound: The monitor has seen nothing of that model, nor a rollout of it.

    """
    rollout = rollouts.rollouts.get(name) if rollouts is not None else None
    if name not in snapshot.model_names and rollout is None:
        raise ModelNotFound(f"the monitor has seen no events of model {name!r}")
    return {
        "name": name,
        "unscored_examples": snapshot.unscored_examples.get(name, 0),
        "versions": [version_to_json(v) for v in snapshot.model(name)],
        "rollout": rollout_to_json(rollout) if rollout is not None else None,
    }


def snapshot_to_json(
    snapshot: MonitorSnapshot, rollouts: RolloutsSnapshot | None = None
) -> dict[str, Any]:
    """Every model's metrics (and rollout) as a JSON object.

    >>> snapshot_to_json(MonitorSnapshot(versions=()))
    {'models': [], 'rejected': {}}
    """
    names = set(snapshot.model_names) | set(rollouts.rollouts if rollouts is not None else ())
    return {
        "models": [model_to_json(snapshot, name, rollouts) for name in sorted(names)],
        "rejected": dict(snapshot.rejected),
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
