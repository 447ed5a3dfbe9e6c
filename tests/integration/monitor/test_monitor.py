"""The monitor against the real broker: counts, quality, /metrics, dead letters, drift alerts."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from headwater.services.monitor.server import MonitorServer
from headwater.shared.bus.codec import (
    decode_event,
    encode_event,
    encode_event_json,
    header,
    json_header,
    protobuf_header,
)
from headwater.shared.bus.dead_letter import REASON_HEADER, SOURCE_TOPIC_HEADER
from headwater.shared.bus.topics import Topic
from headwater.shared.features import target_to_proto
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings
from tests.fixtures import (
    eventually,
    produce_records,
    prometheus_samples,
    read_records,
)
from tests.integration.monitor.conftest import monitor_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Record = tuple[Topic, str, bytes, list[tuple[str, bytes]]]


def prediction(model: str, version: int, latency_ms: float) -> Record:
    event = events_pb2.PredictionEvent(
        prediction_id=uuid.uuid4().hex, model=model, version=version, latency_ms=latency_ms
    )
    return Topic.PREDICTIONS, event.prediction_id, encode_event(event), [protobuf_header()]


def example(
    model: str, version: int, label: object, predicted: object, *, as_json: bool = False
) -> Record:
    event = events_pb2.LabeledExample(
        example_id=uuid.uuid4().hex, model=model, served_version=version
    )
    event.label.CopyFrom(target_to_proto(label))
    event.prediction.CopyFrom(target_to_proto(predicted))
    if as_json:
        return Topic.EXAMPLES, model, encode_event_json(event), [json_header()]
    return Topic.EXAMPLES, model, encode_event(event), [protobuf_header()]


@pytest.fixture
async def monitor(kafka_settings: KafkaSettings) -> AsyncIterator[MonitorServer]:
    server = MonitorServer(monitor_settings(kafka_settings, window_size=50))
    await server.start()
    threads_before = {t for t in threading.enumerate() if not t.daemon}
    try:
        yield server
    finally:
        started = time.monotonic()
        await server.stop(grace_s=5.0)
        assert time.monotonic() - started < 7.0
    # the Faust consumer thread is not a daemon: a clean stop must have ended it
    leftover = {t for t in threading.enumerate() if not t.daemon and t.is_alive()}
    assert not (leftover - threads_before - {threading.main_thread()})


class Client:
    """The monitor's HTTP endpoints."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@pytest.fixture
async def client(monitor: MonitorServer) -> AsyncIterator[Client]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield Client(session, monitor.http_port)


def by_version(model_json: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {v["version"]: v for v in model_json["versions"]}


async def test_counts_quality_and_metrics_match_what_was_sent(
    monitor: MonitorServer, client: Client, kafka_settings: KafkaSettings
) -> None:
    status, body = await client.get("/health")
    assert (status, body["status"]) == ((200, "serving") if monitor.ready else (503, "starting"))

    records = [prediction("churn", 1, 2.0) for _ in range(30)]
    records += [prediction("churn", 2, 40.0) for _ in range(10)]
    records += [example("churn", 1, True, i < 15) for i in range(20)]  # 15 of 20 right
    records += [example("churn", 2, "yes", "yes" if i < 4 else "no") for i in range(9)]
    records += [example("churn", 2, "yes", "no", as_json=True)]  # 4 of 10 right
    records += [prediction("price", 1, 1.0) for _ in range(5)]
    records += [example("price", 1, 10.0, 10.0 + err) for err in (1.0, -2.0, 3.0, -4.0, 5.0)]
    await produce_records(kafka_settings, records)

    async def counted() -> dict[str, Any] | None:
        status, churn = await client.get("/v1/models/churn")
        if status != 200:
            return None
        versions = by_version(churn)
        if {v: (x["requests"], x["labelled"]) for v, x in versions.items()} != {
            1: (30, 20),
            2: (10, 10),
        }:
            return None
        return churn

    churn = by_version(await eventually(counted, timeout_s=30, what="churn counted"))
    assert churn[1]["rolling_accuracy"] == pytest.approx(0.75)
    assert churn[2]["rolling_accuracy"] == pytest.approx(0.4)
    assert churn[1]["label_coverage"] == pytest.approx(20 / 30)
    assert churn[1]["task"] == "classification"
    assert churn[1]["latency_ms"]["mean"] == pytest.approx(2.0)
    assert churn[2]["latency_ms"]["p50"] > 25.0

    async def price_scored() -> dict[str, Any] | None:
        _, models = await client.get("/v1/models")
        price = [m for m in models["models"] if m["name"] == "price"]
        ready = price and by_version(price[0])[1]["labelled"] == 5
        return by_version(price[0])[1] if ready else None

    price = await eventually(price_scored, timeout_s=10, what="price scored")
    assert price["rolling_mae"] == pytest.approx(3.0)
    assert price["rolling_accuracy"] is None

    status, text = await client.get("/metrics")
    assert status == 200
    got = prometheus_samples(text)
    v1 = (("model", "churn"), ("version", "1"))
    assert got[("headwater_monitor_requests_total", v1)] == 30
    assert got[("headwater_monitor_labelled_total", v1)] == 20
    assert got[("headwater_monitor_rolling_accuracy", v1)] == pytest.approx(0.75)
    assert got[("headwater_monitor_label_coverage", v1)] == pytest.approx(20 / 30)
    assert got[("headwater_monitor_latency_ms_bucket", (("le", "2.5"), *v1))] == 30
    price_v1 = (("model", "price"), ("version", "1"))
    assert got[("headwater_monitor_rolling_mae", price_v1)] == pytest.approx(3.0)

    status, missing = await client.get("/v1/models/nope")
    assert status == 404 and "nope" in missing["error"]
    assert (await client.get("/health"))[0] == 200


async def test_malformed_events_go_to_dead_letter_and_counting_goes_on(
    monitor: MonitorServer, client: Client, kafka_settings: KafkaSettings
) -> None:
    no_label = events_pb2.LabeledExample(example_id="e-1", model="churn", served_version=1)
    no_label.prediction.bool_label = True
    bad: list[Record] = [
        (Topic.PREDICTIONS, "garbage", b"\xff\xfe not protobuf", [protobuf_header()]),
        (Topic.EXAMPLES, "churn", encode_event(no_label), [protobuf_header()]),
    ]
    good = [prediction("churn", 1, 3.0) for _ in range(3)] + [example("churn", 1, True, True)]
    await produce_records(kafka_settings, bad + good)

    letters = await read_records(kafka_settings, Topic.DEAD_LETTER, 2, timeout_s=30)
    reasons = {
        r.key: (
            header(r.headers, REASON_HEADER).decode(),  # type: ignore[union-attr]
            header(r.headers, SOURCE_TOPIC_HEADER).decode(),  # type: ignore[union-attr]
            r.value,
        )
        for r in letters
    }
    reason, source, value = reasons[b"garbage"]
    assert "malformed protobuf PredictionEvent" in reason
    assert source == kafka_settings.topic("predictions")
    assert value == b"\xff\xfe not protobuf"  # the original bytes, unchanged
    reason, source, value = reasons[b"churn"]
    assert "has no label" in reason
    assert source == kafka_settings.topic("examples")

    async def still_counting() -> dict[str, Any] | None:
        status, churn = await client.get("/v1/models/churn")
        if status != 200:
            return None
        v1 = by_version(churn).get(1)
        return v1 if v1 and (v1["requests"], v1["labelled"]) == (3, 1) else None

    v1 = await eventually(still_counting, timeout_s=15, what="good events counted")
    assert v1["rolling_accuracy"] == 1.0
    _, models = await client.get("/v1/models")
    assert models["rejected"] == {"predictions": 1, "examples": 1}


async def test_an_abrupt_error_change_raises_one_drift_alert(
    monitor: MonitorServer, client: Client, kafka_settings: KafkaSettings
) -> None:
    # one partition key (the model), so the monitor sees them in this order
    records = [example("drifty", 7, "a", "a") for _ in range(300)]
    records += [example("drifty", 7, "a", "b") for _ in range(300)]
    await produce_records(kafka_settings, records)

    [record] = await read_records(kafka_settings, Topic.ALERTS, 1, timeout_s=30)
    alert = decode_event(events_pb2.Alert, record.value, record.headers)
    assert record.key == b"drifty"
    assert (alert.model, alert.version, alert.kind) == ("drifty", 7, "drift.error")
    assert alert.severity == events_pb2.SEVERITY_WARNING
    assert alert.values["mean_before"] < alert.values["mean_after"]
    assert alert.alert_id and alert.raised_at.seconds > 0

    async def all_scored() -> dict[str, Any] | None:
        status, drifty = await client.get("/v1/models/drifty")
        v7 = by_version(drifty).get(7) if status == 200 else None
        return v7 if v7 and v7["labelled"] == 600 else None

    v7 = await eventually(all_scored, timeout_s=15, what="all examples scored")
    assert v7["drift_detected"] >= 1
    assert v7["alerts_raised"] == 1  # the cool-down holds back any further one
    assert v7["rolling_accuracy"] == 0.0  # the window holds only the last 50 (wrong) ones


async def test_stop_during_the_group_join_is_bounded(kafka_settings: KafkaSettings) -> None:
    settings = monitor_settings(kafka_settings)
    threads_before = {t for t in threading.enumerate() if not t.daemon}
    server = MonitorServer(settings)
    await server.start()
    started = time.monotonic()
    await server.stop(grace_s=3.0)
    assert time.monotonic() - started < 4.0
    assert not server.ready
    leftover = {t for t in threading.enumerate() if not t.daemon and t.is_alive()}
    assert not (leftover - threads_before)


async def test_a_header_with_a_null_value_is_counted_like_any_record(
    monitor: MonitorServer, client: Client, kafka_settings: KafkaSettings
) -> None:
    topic, key, value, headers = prediction("nulls", 1, 3.0)
    await produce_records(kafka_settings, [(topic, key, value, [*headers, ("x-empty", None)])])

    async def counted() -> dict[str, Any] | None:
        status, body = await client.get("/v1/models/nulls")
        return body if status == 200 and by_version(body)[1]["requests"] == 1 else None

    await eventually(counted, timeout_s=30, what="the record with a null header counted")
