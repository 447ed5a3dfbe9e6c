"""MonitorService with an in-memory producer: decoding, dead letters, alerts, settings."""

from __future__ import annotations

from typing import Any

import pytest

from headwater.services.monitor.domain import MonitorConfig, MonitorState
from headwater.services.monitor.rollout_controller import RolloutController
from headwater.services.monitor.service import MonitorService
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.bus.codec import encode_event, encode_event_json, json_header
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import Unavailable
from headwater.shared.features import target_to_proto
from headwater.shared.pb import events_pb2
from tests.fakes import FakeProducer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def make(producer: FakeProducer, **config: Any) -> MonitorService:
    return MonitorService(MonitorState(MonitorConfig(**config)), producer, Clock())  # type: ignore[arg-type]


def labelled(model: str, version: int, label: object, predicted: object) -> bytes:
    event = events_pb2.LabeledExample(example_id="e", model=model, served_version=version)
    event.label.CopyFrom(target_to_proto(label))
    event.prediction.CopyFrom(target_to_proto(predicted))
    return encode_event(event)


def record(topic: str, value: bytes, headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumedRecord:
    return ConsumedRecord(topic, 0, 0, b"k", value, headers)


async def test_predictions_in_protobuf_and_json_are_counted() -> None:
    service = make(FakeProducer())
    event = events_pb2.PredictionEvent(prediction_id="p", model="m", version=2, latency_ms=3.5)
    await service.handle_prediction(record("x.predictions", encode_event(event)))
    await service.handle_prediction(
        record("x.predictions", encode_event_json(event), (json_header(),))
    )
    v = service.snapshot().version("m", 2)
    assert v is not None and v.requests == 2 and v.latency.sum_ms == 7.0


async def test_malformed_record_is_dead_lettered_with_its_reason() -> None:
    producer = FakeProducer()
    service = make(producer)
    await service.handle_example(record("x.examples", b"\x08\x96", (("trace", b"t"),)))
    [letter] = producer.sent
    headers = dict(letter.headers)
    assert letter.topic is Topic.DEAD_LETTER
    assert letter.value == b"\x08\x96" and letter.key == b"k"
    assert b"LabeledExample" in headers[REASON_HEADER]
    assert headers["trace"] == b"t"  # original headers survive
    assert service.snapshot().rejected == {"examples": 1}


async def test_unexpected_error_is_dead_lettered_not_raised(monkeypatch) -> None:
    producer = FakeProducer()
    service = make(producer)

    def broken(*_: Any, **__: Any) -> None:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(service.state, "observe_prediction", broken)
    event = events_pb2.PredictionEvent(model="m", version=1, latency_ms=1.0)
    await service.handle_prediction(record("x.predictions", encode_event(event)))
    [letter] = producer.sent
    assert dict(letter.headers)[REASON_HEADER] == b"monitor failed: ZeroDivisionError"


async def test_dead_letter_is_retried_until_acked() -> None:
    producer = FakeProducer(outages=2)
    service = make(producer)
    await service.handle_prediction(record("x.predictions", b"\xff"))
    assert len(producer.sent) == 1 and producer.outages == 0
    assert service.snapshot().rejected == {"predictions": 1}


async def test_a_stopping_monitor_does_not_drop_a_record_it_could_not_dead_letter() -> None:
    producer = FakeProducer(outages=1_000)
    service = MonitorService(MonitorState(MonitorConfig()), producer, Clock(),  # type: ignore[arg-type]
                             stopping=lambda: True)
    with pytest.raises(Unavailable):  # the caller does not commit the offset
        await service.handle_prediction(record("x.predictions", b"\xff"))
    assert producer.sent == []


async def test_drift_alert_is_published_keyed_by_model() -> None:
    producer = FakeProducer()
    service = make(producer)
    for i in range(600):
        value = labelled("m", 3, "a", "a" if i < 300 else "b")
        await service.handle_example(record("x.examples", value))
    [(topic, key, alert)] = producer.published
    assert (topic, key) == (Topic.ALERTS, "m")
    assert isinstance(alert, events_pb2.Alert)
    assert (alert.model, alert.version, alert.kind) == ("m", 3, "drift.error")
    assert alert.raised_at.seconds > 1_000


def test_settings_read_their_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_MONITOR_WINDOW_SIZE", "25")
    monkeypatch.setenv("HEADWATER_MONITOR_ALERT_COOLDOWN_S", "5")
    monkeypatch.setenv("HEADWATER_MONITOR_LATENCY_BUCKETS_MS", "[1, 10]")
    config = MonitorSettings().monitor_config()
    assert (config.window_size, config.alert_cooldown_s) == (25, 5.0)
    assert config.latency_buckets_ms == (1.0, 10.0)


async def test_a_record_with_unreadable_headers_is_dead_lettered_and_counted() -> None:
    producer = FakeProducer()
    service = make(producer)
    event = events_pb2.PredictionEvent(model="m", version=1, latency_ms=1.0)
    broken = ConsumedRecord("x.predictions", 0, 0, b"k", encode_event(event), (("a", "text"),))  # type: ignore[arg-type]
    await service.handle_prediction(broken)
    [letter] = producer.sent
    assert dict(letter.headers)[REASON_HEADER].startswith(b"unreadable record headers: TypeError")
    assert service.snapshot().rejected == {"predictions": 1}
    assert service.snapshot().version("m", 1) is None


async def test_accepted_records_feed_the_rollout_controller_with_their_partition() -> None:
    rollouts = RolloutController()
    service = MonitorService(
        MonitorState(MonitorConfig()), FakeProducer(), Clock(), rollouts=rollouts  # type: ignore[arg-type]
    )
    good = ConsumedRecord("x.examples", 1, 0, b"churn", labelled("churn", 1, True, True), ())
    await service.handle_example(good)
    bad = ConsumedRecord("x.examples", 0, 1, b"fraud", labelled("fraud", 0, True, True), ())
    await service.handle_example(bad)  # no served version: dead-lettered, not fed
    assert rollouts.owns("churn", {1}) and not rollouts.owns("churn", {0})
    assert rollouts.models_to_refresh() == ("churn",)
