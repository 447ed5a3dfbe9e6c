"""The join on the real broker: predictions + feedback in, exactly one example per pair out."""

from __future__ import annotations

import functools
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headwater.services.trainer.join.streams import JoinStreams
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.bus.codec import (
    decode_event,
    encode_event,
    encode_event_json,
    header,
    json_header,
    protobuf_header,
)
from headwater.shared.bus.dead_letter import REASON_HEADER, SOURCE_TOPIC_HEADER
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, produce_records, read_records, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def settings_for(kafka: KafkaSettings, **overrides) -> TrainerSettings:
    values = {
        "kafka": kafka,
        "app_id": unique_name("trainer"),
        "port": 0,
        "session_timeout_s": 2.0,
        "join_sweep_interval_s": 0.2,
        **overrides,
    }
    return TrainerSettings(**values)


@pytest.fixture
async def join_streams(kafka_settings: KafkaSettings) -> AsyncIterator[JoinStreams]:
    settings = settings_for(kafka_settings)
    producer = EventProducer(kafka_settings, client_id="test-trainer")
    await producer.start()
    with tempfile.TemporaryDirectory() as data_dir:
        streams = JoinStreams(settings, kafka_settings.partitions, Path(data_dir), producer)
        await streams.start()
        try:
            await streams.wait_ready(30)
            yield streams
        finally:
            await streams.stop(5)
            await producer.stop(2)


def prediction(model: str = "churn", x: float = 1.5) -> events_pb2.PredictionEvent:
    event = events_pb2.PredictionEvent(prediction_id=uuid.uuid4().hex, model=model, version=1)
    event.features["x"].float_value = x
    event.prediction.bool_label = False
    return event


def feedback(prediction_id: str, label: bool) -> events_pb2.FeedbackEvent:
    event = events_pb2.FeedbackEvent(prediction_id=prediction_id)
    event.label.bool_label = label
    return event


#: Each record acked before the next is sent: the broker has them in the order written here.
produce = functools.partial(produce_records, one_at_a_time=True)


async def test_predictions_and_json_feedback_make_one_example_per_pair(
    join_streams: JoinStreams, kafka_settings: KafkaSettings
) -> None:
    predictions = [prediction(x=float(i)) for i in range(6)]
    labels = {p.prediction_id: i % 2 == 0 for i, p in enumerate(predictions)}
    records = []
    # half the feedback comes before its prediction; every event is delivered twice
    for i, p in enumerate(predictions):
        pred = (Topic.PREDICTIONS, p.prediction_id.encode(), encode_event(p), [protobuf_header()])
        fb_event = feedback(p.prediction_id, labels[p.prediction_id])
        fb = (
            Topic.FEEDBACK,
            p.prediction_id.encode(),
            encode_event_json(fb_event),
            [json_header()],
        )
        records += [fb, pred, fb] if i % 2 else [pred, pred, fb]
    await produce(kafka_settings, records)

    examples = await read_records(kafka_settings, Topic.EXAMPLES, count=6, timeout_s=20)
    decoded = [decode_event(events_pb2.LabeledExample, r.value, r.headers) for r in examples]
    assert sorted(e.example_id for e in decoded) == sorted(labels)
    for record, example in zip(examples, decoded, strict=True):
        assert record.key == b"churn"
        assert example.model == "churn"
        assert example.prediction_id == example.example_id
        assert example.label.bool_label is labels[example.example_id]
        source = next(p for p in predictions if p.prediction_id == example.example_id)
        assert example.features["x"].float_value == source.features["x"].float_value
        assert example.served_version == 1
        assert example.labelled_at.seconds > 0
    # nothing more than one example per pair arrives later either
    again = await read_records(kafka_settings, Topic.EXAMPLES, count=6, timeout_s=2)
    assert len(again) == 6


async def test_examples_go_on_with_the_trace_of_their_prediction(
    join_streams: JoinStreams, kafka_settings: KafkaSettings
) -> None:
    first, second = prediction(), prediction()
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01".encode()
    other = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()
    feedback_trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01".encode()

    def fb(p: events_pb2.PredictionEvent, trace: bytes):
        headers = [protobuf_header(), ("traceparent", trace)]
        return (
            Topic.FEEDBACK,
            p.prediction_id.encode(),
            encode_event(feedback(p.prediction_id, True)),
            headers,
        )

    await produce(
        kafka_settings,
        [
            # the prediction waits in the table with its trace; the feedback's trace is not used
            (
                Topic.PREDICTIONS,
                first.prediction_id.encode(),
                encode_event(first),
                [protobuf_header(), ("traceparent", traceparent)],
            ),
            fb(first, other),
            # feedback waits with its trace; a prediction without one leaves the feedback's
            fb(second, feedback_trace),
            (Topic.PREDICTIONS, second.prediction_id.encode(), encode_event(second), []),
        ],
    )
    examples = await read_records(kafka_settings, Topic.EXAMPLES, count=2, timeout_s=20)
    by_id = {
        decode_event(events_pb2.LabeledExample, r.value, r.headers).example_id: r for r in examples
    }
    emitted = header(by_id[first.prediction_id].headers, "traceparent")
    assert emitted is not None and emitted.split(b"-")[1] == trace_id.encode()
    assert emitted == traceparent  # the prediction's span is the example's parent
    assert header(by_id[second.prediction_id].headers, "traceparent") == feedback_trace


async def test_malformed_feedback_is_dead_lettered_with_the_reason(
    join_streams: JoinStreams, kafka_settings: KafkaSettings
) -> None:
    good = prediction()
    await produce(
        kafka_settings,
        [
            (Topic.FEEDBACK, b"p-bad", b'{"predictionId": 3', [json_header()]),
            (Topic.FEEDBACK, b"wrong-key", encode_event(feedback("p-x", True)), []),
            (Topic.PREDICTIONS, good.prediction_id.encode(), encode_event(good), []),
            (
                Topic.FEEDBACK,
                good.prediction_id.encode(),
                encode_event_json(feedback(good.prediction_id, True)),
                [json_header()],
            ),
        ],
    )
    dead = await read_records(kafka_settings, Topic.DEAD_LETTER, count=2, timeout_s=20)
    by_key = {r.key: r for r in dead}
    bad = by_key[b"p-bad"]
    assert bad.value == b'{"predictionId": 3'
    assert header(bad.headers, REASON_HEADER).startswith(b"malformed JSON FeedbackEvent")
    assert header(bad.headers, SOURCE_TOPIC_HEADER) == kafka_settings.topic("feedback").encode()
    assert b"is not the prediction id" in header(by_key[b"wrong-key"].headers, REASON_HEADER)
    # the agent kept going: the good pair after the bad records was joined
    examples = await read_records(kafka_settings, Topic.EXAMPLES, count=1, timeout_s=20)
    assert [r.key for r in examples] == [b"churn"]


async def test_waiting_predictions_survive_a_restart_and_expired_ones_do_not(
    kafka_settings: KafkaSettings,
) -> None:
    settings = settings_for(kafka_settings, join_ttl_s=4.0)
    producer = EventProducer(kafka_settings, client_id="test-trainer")
    await producer.start()
    waiting = [prediction(x=float(i)) for i in range(5)]
    traces = {p.prediction_id: f"00-{uuid.uuid4().hex}-{'1' * 16}-01".encode() for p in waiting}
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            first = JoinStreams(settings, kafka_settings.partitions, Path(data_dir), producer)
            await first.start()
            try:
                await first.wait_ready(30)
                await produce(
                    kafka_settings,
                    [
                        (
                            Topic.PREDICTIONS,
                            p.prediction_id.encode(),
                            encode_event(p),
                            [("traceparent", traces[p.prediction_id])],
                        )
                        for p in waiting
                    ],
                )
                assert first.service is not None
                await eventually_len(first.service.slots, 5)
            finally:
                await first.stop(5)

            second = JoinStreams(settings, kafka_settings.partitions, Path(data_dir), producer)
            await second.start()
            try:
                await second.wait_ready(30)
                assert second.service is not None
                assert sorted(second.service.slots) == sorted(p.prediction_id for p in waiting)
                await produce(
                    kafka_settings,
                    [
                        (
                            Topic.FEEDBACK,
                            p.prediction_id.encode(),
                            encode_event(feedback(p.prediction_id, True)),
                            [],
                        )
                        for p in waiting[:3]
                    ],
                )
                examples = await read_records(kafka_settings, Topic.EXAMPLES, 3, timeout_s=20)
                assert {
                    r.value and decode_event(events_pb2.LabeledExample, r.value).example_id
                    for r in examples
                } == {p.prediction_id for p in waiting[:3]}
                # the waiting predictions' traces came back with their slots
                assert {header(r.headers, "traceparent") for r in examples} == {
                    traces[p.prediction_id] for p in waiting[:3]
                }
                # the TTL sweep deletes every slot (waiting and joined) once expired
                await eventually_len(second.service.slots, 0, timeout_s=15)
            finally:
                await second.stop(5)
    finally:
        await producer.stop(2)


async def eventually_len(mapping, n: int, timeout_s: float = 10.0) -> None:
    async def probe():
        return len(mapping) == n

    await eventually(probe, timeout_s=timeout_s, what=f"{n} join slots")
