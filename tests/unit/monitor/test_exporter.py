"""Snapshot → Prometheus exposition text and JSON."""

from __future__ import annotations

import pytest

from headwater.services.monitor.convert import model_to_json, snapshot_to_json
from headwater.services.monitor.domain import (
    ExampleObserved,
    MonitorConfig,
    MonitorState,
    PredictionObserved,
    Task,
)
from headwater.services.monitor.exporter import monitor_registry, render_metrics
from headwater.shared.errors import ModelNotFound
from tests.fixtures import prometheus_samples


def sample_state() -> MonitorState:
    state = MonitorState(MonitorConfig(window_size=10, latency_buckets_ms=(1.0, 10.0)))
    for ms in (0.5, 3.0, 3.0, 40.0):
        state.observe_prediction(PredictionObserved("churn", 2, latency_ms=ms), now=1.0)
    for label, prediction in [(True, True), (True, False)]:
        state.observe_example(
            ExampleObserved("churn", 2, Task.CLASSIFICATION, label, prediction), now=2.0
        )
    state.observe_example(ExampleObserved("price", 1, Task.REGRESSION, 3.0, 1.0), now=2.0)
    state.observe_example(ExampleObserved("churn", 0, Task.CLASSIFICATION, True, None), now=2.0)
    state.record_rejected("predictions")
    return state


def test_exposition_has_every_metric() -> None:
    text = render_metrics(monitor_registry(sample_state().snapshot)).decode()
    got = prometheus_samples(text)
    churn = (("model", "churn"), ("version", "2"))
    price = (("model", "price"), ("version", "1"))
    assert got[("headwater_monitor_requests_total", churn)] == 4
    assert got[("headwater_monitor_labelled_total", churn)] == 2
    assert got[("headwater_monitor_label_coverage", churn)] == 0.5
    assert got[("headwater_monitor_rolling_accuracy", churn)] == 0.5
    assert got[("headwater_monitor_rolling_mae", price)] == 2.0
    assert got[("headwater_monitor_drift_detected_total", churn)] == 0
    assert got[("headwater_monitor_latency_ms_bucket", (("le", "1.0"), *churn))] == 1
    assert got[("headwater_monitor_latency_ms_bucket", (("le", "10.0"), *churn))] == 3
    assert got[("headwater_monitor_latency_ms_bucket", (("le", "+Inf"), *churn))] == 4
    assert got[("headwater_monitor_latency_ms_count", churn)] == 4
    assert got[("headwater_monitor_latency_ms_sum", churn)] == pytest.approx(46.5)
    assert got[("headwater_monitor_unscored_examples_total", (("model", "churn"),))] == 1
    assert got[("headwater_monitor_events_rejected_total", (("topic", "predictions"),))] == 1
    # undefined values are absent rather than 0
    assert ("headwater_monitor_rolling_accuracy", price) not in got
    assert ("headwater_monitor_label_coverage", price) not in got
    assert ("headwater_monitor_rolling_mae", churn) not in got


def test_exposition_reads_the_state_at_scrape_time() -> None:
    state = MonitorState(MonitorConfig())
    registry = monitor_registry(state.snapshot)
    assert "headwater_monitor_requests_total{" not in render_metrics(registry).decode()
    state.observe_prediction(PredictionObserved("m", 1, latency_ms=1.0), now=0.0)
    assert 'headwater_monitor_requests_total{model="m",version="1"} 1.0' in (
        render_metrics(registry).decode()
    )


def test_process_metrics_can_be_included() -> None:
    registry = monitor_registry(MonitorState(MonitorConfig()).snapshot)
    assert b"python_info" in render_metrics(registry, include_process=True)
    assert b"python_info" not in render_metrics(registry)


def test_json_has_the_same_numbers() -> None:
    body = snapshot_to_json(sample_state().snapshot())
    assert [m["name"] for m in body["models"]] == ["churn", "price"]
    churn = body["models"][0]
    assert churn["unscored_examples"] == 1
    [v2] = churn["versions"]
    assert (v2["version"], v2["task"], v2["requests"], v2["labelled"]) == (
        2,
        "classification",
        4,
        2,
    )
    assert (v2["label_coverage"], v2["rolling_accuracy"], v2["rolling_mae"]) == (0.5, 0.5, None)
    assert v2["latency_ms"]["count"] == 4
    assert v2["latency_ms"]["buckets"][-1] == {"le": "+Inf", "count": 4}
    assert body["rejected"] == {"predictions": 1}


def test_unknown_model_json_is_not_found() -> None:
    with pytest.raises(ModelNotFound, match="nope"):
        model_to_json(sample_state().snapshot(), "nope")
