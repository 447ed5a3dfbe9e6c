"""Prometheus exposition of the monitor's snapshots.

A custom collector reads one :class:`MonitorSnapshot` per scrape, so the
metrics are always consistent with ``/v1/models`` and nothing is double-kept.

>>> from headwater.services.monitor.domain import (
...     MonitorConfig, MonitorState, PredictionObserved)
>>> state = MonitorState(MonitorConfig())
>>> state.observe_prediction(PredictionObserved("churn", 1, latency_ms=4.0), now=0.0)
>>> text = render_metrics(monitor_registry(state.snapshot)).decode()
>>> 'headwater_monitor_requests_total{model="churn",version="1"} 1.0' in text
True
>>> 'headwater_monitor_latency_ms_bucket{le="5.0",model="churn",version="1"} 1.0' in text
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from headwater.services.monitor.domain import MonitorSnapshot, VersionSnapshot
from headwater.services.monitor.rollout_controller import RolloutsSnapshot

SnapshotSource = Callable[[], MonitorSnapshot]
RolloutsSource = Callable[[], RolloutsSnapshot]
_VERSION_LABELS = ("model", "version")


class MonitorCollector(Collector):
    """Turns the current snapshot into Prometheus metric families.

    Args:
        snapshot: Returns the monitor's state now (called once per scrape).
        rollouts: Returns the rollout controller's state now (None: no controller).

    """

    def __init__(self, snapshot: SnapshotSource, rollouts: RolloutsSource | None = None) -> None:
        self._snapshot = snapshot
        self._rollouts = rollouts

    def describe(self) -> list[Metric]:
        """No up-front description: the families depend on the data."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every monitor metric family for the current snapshot."""
        snapshot = self._snapshot()
        yield from _version_families(snapshot.versions)
        yield _counts_by(
            "unscored_examples",
            "Labelled examples that no served prediction can be scored on, by model.",
            "model",
            snapshot.unscored_examples,
        )
        yield _counts_by(
            "events_rejected",
            "Events the monitor could not use and sent to dead-letter, by source topic.",
            "topic",
            snapshot.rejected,
        )
        if self._rollouts is not None:
            yield from _decision_families(self._rollouts())


def _decision_families(rollouts: RolloutsSnapshot) -> Iterator[Metric]:
    decisions = CounterMetricFamily(
        "headwater_monitor_rollout_decisions",
        "Rollout decisions the registry accepted (advance, promote, rollback), by model.",
        labels=("model", "action"),
    )
    for (model, action), count in sorted(rollouts.decisions.items()):
        decisions.add_metric((model, action), count)
    yield decisions
    blocked = CounterMetricFamily(
        "headwater_monitor_rollout_blocked",
        "Rollout decisions the registry refused on the rollout as it stood (a failed "
        "promotion gate), each try counted, by model and action.",
        labels=("model", "action"),
    )
    for (model, action), count in sorted(rollouts.blocked.items()):
        blocked.add_metric((model, action), count)
    yield blocked


def _version_families(versions: tuple[VersionSnapshot, ...]) -> Iterator[Metric]:
    requests = _counter("requests", "Predictions served, by model version.")
    labelled = _counter("labelled", "Predictions whose label arrived, by model version.")
    drifts = _counter("drift_detected", "Changes the error drift detector found.")
    alerts = _counter("alerts_raised", "Alerts raised (after the cool-down), by model version.")
    coverage = _gauge("label_coverage", "Labelled predictions / served predictions.")
    accuracy = _gauge("rolling_accuracy", "Accuracy over the last window of labelled examples.")
    mae = _gauge("rolling_mae", "Mean absolute error over the last window of labelled examples.")
    latency = HistogramMetricFamily(
        "headwater_monitor_latency_ms",
        "Gateway prediction latency in milliseconds.",
        labels=_VERSION_LABELS,
    )
    for v in versions:
        key = (v.model, str(v.version))
        requests.add_metric(key, v.requests)
        labelled.add_metric(key, v.labelled)
        drifts.add_metric(key, v.drift_detected)
        alerts.add_metric(key, v.alerts_raised)
        _add_if_known(coverage, key, v.label_coverage)
        _add_if_known(accuracy, key, v.rolling_accuracy)
        _add_if_known(mae, key, v.rolling_mae)
        buckets = [(_le(bound), float(count)) for bound, count in v.latency.buckets]
        latency.add_metric(list(key), buckets, sum_value=v.latency.sum_ms)
    yield from (requests, latency, labelled, coverage, accuracy, mae, drifts, alerts)


def _counts_by(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(f"headwater_monitor_{name}", doc, labels=(label,))
    for value, count in sorted(counts.items()):
        family.add_metric((value,), count)
    return family


def _counter(name: str, doc: str) -> CounterMetricFamily:
    return CounterMetricFamily(f"headwater_monitor_{name}", doc, labels=_VERSION_LABELS)


def _gauge(name: str, doc: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"headwater_monitor_{name}", doc, labels=_VERSION_LABELS)


def _add_if_known(family: GaugeMetricFamily, key: tuple[str, str], value: float | None) -> None:
    # An undefined value (no labels yet) is absent, not 0: 0 would read as "all wrong".
    if value is not None and math.isfinite(value):
        family.add_metric(key, value)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def monitor_registry(
    snapshot: SnapshotSource, rollouts: RolloutsSource | None = None
) -> CollectorRegistry:
    """A registry of its own holding the monitor collector (one per server)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(snapshot, rollouts))
    return registry


def render_metrics(registry: CollectorRegistry, *, include_process: bool = False) -> bytes:
    """The Prometheus text exposition of ``registry``.

    Args:
        registry: Usually :func:`monitor_registry`'s.
        include_process: Also render the process-wide default registry (bus
            producer counters, Python and process metrics).

    """
    text = generate_latest(registry)
    return (generate_latest(REGISTRY) + text) if include_process else text
