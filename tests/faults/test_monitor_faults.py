"""The monitor under malformed records: each dead-lettered with its reason, good counts exact."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from headwater.services.monitor.server import MonitorServer
from headwater.shared.bus.codec import (
    encode_event,
    encode_event_json,
    header,
    json_header,
    protobuf_header,
)
from headwater.shared.bus.dead_letter import REASON_HEADER, SOURCE_TOPIC_HEADER
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.features import target_to_proto
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings
from tests.faults.support import http_get, read_to_end, scrape
from tests.fixtures import eventually
from tests.integration.monitor.conftest import monitor_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PROTOBUF = (protobuf_header(),)
PREDICTIONS, EXAMPLES = Topic.PREDICTIONS, Topic.EXAMPLES


@dataclass(frozen=True)
class Record:
    """One record to produce; ``reason`` is set for the bad ones (what dead-letter must say)."""

    topic: Topic
    key: str
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = PROTOBUF
    reason: str = ""


def prediction(model: str, version: int, latency_ms: float, *, as_json: bool = False) -> Record:
    event = events_pb2.PredictionEvent(
        prediction_id=uuid.uuid4().hex, model=model, version=version, latency_ms=latency_ms
    )
    if as_json:
        return Record(PREDICTIONS, event.prediction_id, encode_event_json(event), (json_header(),))
    return Record(PREDICTIONS, event.prediction_id, encode_event(event))


def example_event(model: str, version: int, label: object, predicted: object) -> bytes:
    event = events_pb2.LabeledExample(
        example_id=uuid.uuid4().hex, model=model, served_version=version
    )
    event.label.CopyFrom(target_to_proto(label))
    event.prediction.CopyFrom(target_to_proto(predicted))
    return encode_event(event)


def example(model: str, version: int, label: object, predicted: object) -> Record:
    return Record(EXAMPLES, model, example_event(model, version, label, predicted))


def bad(topic: Topic, key: str, value: bytes | None, reason: str, headers=PROTOBUF) -> Record:
    return Record(topic, key, value, tuple(headers), reason)


def nan_label_example(model: str, version: int) -> bytes:
    event = events_pb2.LabeledExample(example_id="e-nan", model=model, served_version=version)
    event.label.value = float("nan")
    event.prediction.value = 1.0
    return encode_event(event)


def bad_predictions() -> list[Record]:
    ok = events_pb2.PredictionEvent(prediction_id="p-bad", model="churn", version=1)
    feedback = events_pb2.FeedbackEvent(prediction_id="p", label=target_to_proto(1))
    return [
        bad(PREDICTIONS, "p-garbage", b"\xff\xfe not protobuf",
            "malformed protobuf PredictionEvent"),
        bad(PREDICTIONS, "p-example", example_event("churn", 1, True, True),
            "event for churn has no served version (got 0)"),  # a LabeledExample's bytes
        bad(PREDICTIONS, "p-feedback-json",
            encode_event_json(feedback),
            'malformed JSON PredictionEvent: Message type "headwater.events.v1.PredictionEvent" '
            'has no field named "label"', headers=(json_header(),)),
        bad(PREDICTIONS, "p-csv", b"churn,1,2.0", "unsupported content-type 'text/csv'",
            headers=(("content-type", b"text/csv"),)),
        bad(PREDICTIONS, "p-empty", None, "PredictionEvent record has no value"),
        bad(PREDICTIONS, "p-no-model", encode_event(events_pb2.PredictionEvent(version=1)),
            "event has no model"),
        bad(PREDICTIONS, "p-no-version", encode_event(events_pb2.PredictionEvent(model="churn")),
            "event for churn has no served version (got 0)"),
        bad(PREDICTIONS, "p-nan", encode_event(_with(ok, latency_ms=float("nan"))),
            "latency_ms must be finite and >= 0, got nan"),
        bad(PREDICTIONS, "p-negative", encode_event(_with(ok, latency_ms=-1.0)),
            "latency_ms must be finite and >= 0, got -1.0"),
    ]  # fmt: skip


def bad_examples() -> list[Record]:
    """Sent after the good examples of the same key (model), so the model's task is known."""
    no_label = events_pb2.LabeledExample(example_id="e-1", model="churn", served_version=1)
    no_label.prediction.bool_label = True
    no_model = events_pb2.LabeledExample(example_id="e-2", served_version=1)
    no_model.label.bool_label = no_model.prediction.bool_label = True
    prediction_bytes = encode_event(
        events_pb2.PredictionEvent(prediction_id="e-3", model="churn", version=1)
    )
    return [
        bad(EXAMPLES, "churn", b"\x0a\xff\xff\xff\xff\x0f", "malformed protobuf LabeledExample"),
        bad(EXAMPLES, "churn", encode_event(no_label), "labelled example 'e-1' has no label"),
        bad(EXAMPLES, "churn", encode_event(no_model), "labelled example has no model"),
        bad(EXAMPLES, "churn", b'{"exampleId": "e-4", "model": ', "malformed JSON LabeledExample",
            headers=(json_header(),)),
        bad(EXAMPLES, "churn", prediction_bytes, "labelled example 'e-3' has no label"),
        bad(EXAMPLES, "churn", example_event("churn", 1, 2.5, 2.0),
            "churn v1 is a classification model, got a regression label"),
        bad(EXAMPLES, "price", nan_label_example("price", 1),
            "regression needs a numeric label, got nan"),
    ]  # fmt: skip


def _with(event: events_pb2.PredictionEvent, **fields: Any) -> events_pb2.PredictionEvent:
    copy = events_pb2.PredictionEvent()
    copy.CopyFrom(event)
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


async def produce(kafka: KafkaSettings, records: list[Record]) -> None:
    """Produce in list order (order per key is kept) and wait until every one is acked."""
    producer = EventProducer(kafka, client_id="test-foreign-producer")
    await producer.start()
    try:
        for r in records:
            producer.publish_raw(r.topic, r.key.encode(), r.value, r.headers)  # type: ignore[arg-type]
        await producer.flush(timeout_s=20)
        assert producer.failed == 0
    finally:
        await producer.stop(grace_s=2)


@pytest.fixture
async def monitor(kafka_settings: KafkaSettings) -> AsyncIterator[MonitorServer]:
    server = MonitorServer(monitor_settings(kafka_settings, window_size=100))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=5.0)


async def get_json(monitor: MonitorServer, path: str) -> tuple[int, Any]:
    status, body = await http_get(f"http://127.0.0.1:{monitor.http_port}{path}")
    return status, json.loads(body)


def versions_of(model_json: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {v["version"]: v for v in model_json["versions"]}


async def test_malformed_records_are_dead_lettered_and_good_counts_stay_exact(
    monitor: MonitorServer, kafka_settings: KafkaSettings
) -> None:
    bad_p, bad_e = bad_predictions(), bad_examples()
    good_p = [prediction("churn", 1, 2.0) for _ in range(30)]
    good_p += [prediction("churn", 1, 2.0, as_json=True) for _ in range(10)]
    good_p += [prediction("churn", 2, 40.0) for _ in range(20)]
    good_p += [prediction("price", 1, 1.0) for _ in range(5)]
    good_e = [example("churn", 1, True, i < 20) for i in range(30)]  # 20 of 30 right
    good_e += [example("price", 1, 10.0, 10.0 + e) for e in (1.0, -2.0, 3.0, -4.0, 5.0)]
    # bad predictions interleaved with good ones; bad examples after the good ones of their key
    records: list[Record] = []
    for i, record in enumerate(good_p):
        records.append(record)
        if i % 7 == 0 and bad_p:
            records.append(bad_p.pop(0))
    records += bad_p + good_e + bad_e
    bad_records = [r for r in records if r.reason]
    assert len(bad_records) == 9 + 7
    await produce(kafka_settings, records)

    async def all_seen() -> dict[str, Any] | None:
        # Every record handled: rejections and good counts both complete (records on other
        # partitions may still be in flight when the rejections are all counted).
        status, body = await get_json(monitor, "/v1/models")
        if status != 200 or body.get("rejected", {}) != {"predictions": 9, "examples": 7}:
            return None
        versions = [v for m in body["models"] for v in m["versions"]]
        requests = sum(v["requests"] for v in versions)
        labelled = sum(v["labelled"] for v in versions)
        return body if (requests, labelled) == (len(good_p), len(good_e)) else None

    body = await eventually(all_seen, timeout_s=40, what="every record handled")
    models = {m["name"]: versions_of(m) for m in body["models"]}
    assert set(models) == {"churn", "price"}
    churn, price = models["churn"], models["price"]
    counts = {v: (x["requests"], x["labelled"]) for v, x in churn.items()}
    assert counts == {1: (40, 30), 2: (20, 0)}
    assert churn[1]["rolling_accuracy"] == pytest.approx(20 / 30)
    assert churn[1]["latency_ms"]["count"] == 40 and churn[1]["latency_ms"]["mean"] == 2.0
    assert (price[1]["requests"], price[1]["labelled"]) == (5, 5)
    assert price[1]["rolling_mae"] == pytest.approx(3.0)

    letters = await read_to_end(kafka_settings, Topic.DEAD_LETTER)
    assert len(letters) == len(bad_records)
    expected = {(r.topic, r.key, r.value or b""): r for r in bad_records}
    assert len(expected) == len(bad_records)
    for letter in letters:
        source = header(letter.headers, SOURCE_TOPIC_HEADER).decode()  # type: ignore[union-attr]
        topic = PREDICTIONS if source == kafka_settings.topic("predictions") else EXAMPLES
        assert source == kafka_settings.topic(topic.value)
        record = expected.pop((topic, letter.key.decode(), letter.value))
        reason = header(letter.headers, REASON_HEADER).decode()  # type: ignore[union-attr]
        assert record.reason in reason, (record.reason, reason)
    assert not expected  # every bad record, once

    samples = await scrape(monitor.http_port)
    assert samples[("headwater_monitor_events_rejected_total", (("topic", "predictions"),))] == 9
    assert samples[("headwater_monitor_events_rejected_total", (("topic", "examples"),))] == 7
    v1 = (("model", "churn"), ("version", "1"))
    assert samples[("headwater_monitor_requests_total", v1)] == 40
    assert samples[("headwater_monitor_labelled_total", v1)] == 30
    assert (await get_json(monitor, "/health"))[0] == 200


async def test_a_rejected_example_leaves_no_trace_in_the_metrics(
    monitor: MonitorServer, kafka_settings: KafkaSettings
) -> None:
    records = [
        bad(EXAMPLES, "churn", nan_label_example("churn", 9), "regression needs a numeric label"),
        prediction("churn", 1, 2.0),
    ]
    await produce(kafka_settings, records)

    async def both_seen() -> dict[str, Any] | None:
        status, body = await get_json(monitor, "/v1/models")
        if status != 200 or body["rejected"] != {"examples": 1} or not body["models"]:
            return None
        v1 = versions_of(body["models"][0]).get(1)
        return body if v1 and v1["requests"] == 1 else None

    body = await eventually(both_seen, timeout_s=40, what="both records handled")
    [churn] = body["models"]
    assert sorted(versions_of(churn)) == [1]  # no version 9: nothing of it was accepted
