"""The bus against the real broker: topics, producer, codec, trace headers, dead letters."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from opentelemetry.sdk.trace import TracerProvider

from headwater.cli.localstack import TansuBroker, free_port
from headwater.shared.bus import metrics
from headwater.shared.bus.codec import (
    decode_event,
    encode_event,
    encode_event_json,
    header,
    json_header,
)
from headwater.shared.bus.consumer import make_consumer
from headwater.shared.bus.dead_letter import REASON_HEADER, SOURCE_TOPIC_HEADER, dead_letter
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import ALL_TOPICS, Topic, ensure_topics
from headwater.shared.bus.tracing import extract_trace_context
from headwater.shared.errors import FailedPrecondition, InvalidInput, ResourceExhausted, Unavailable
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, read_records, unique_name

pytestmark = pytest.mark.integration


def feedback(prediction_id: str, label: bool = True) -> events_pb2.FeedbackEvent:
    event = events_pb2.FeedbackEvent(prediction_id=prediction_id)
    event.label.bool_label = label
    return event


async def describe(kafka: KafkaSettings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        names = [kafka.topic(t.value) for t in ALL_TOPICS]
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
    finally:
        await admin.close()


async def test_ensure_topics_creates_every_topic_with_the_partition_count(broker) -> None:
    kafka = KafkaSettings(
        bootstrap=broker.bootstrap, topic_prefix=f"{unique_name()}.", partitions=3
    )
    await ensure_topics(kafka)
    await ensure_topics(kafka)  # idempotent: existing topics are fine

    assert await describe(kafka) == {kafka.topic(t.value): 3 for t in ALL_TOPICS}


async def test_publish_round_trip_carries_trace_context(kafka_settings: KafkaSettings) -> None:
    producer = EventProducer(kafka_settings, client_id="test-roundtrip")
    await producer.start()
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("predict") as span:
            producer.publish(Topic.FEEDBACK, "p-1", feedback("p-1"))
        trace_id = span.get_span_context().trace_id
    finally:
        await producer.stop(grace_s=10)

    (record,) = await read_records(kafka_settings, Topic.FEEDBACK, 1)
    assert record.key == b"p-1"
    assert decode_event(events_pb2.FeedbackEvent, record.value, record.headers) == feedback("p-1")
    assert header(record.headers, "content-type") == b"application/x-protobuf"
    ctx = extract_trace_context(record.headers)
    from opentelemetry import trace

    assert trace.get_current_span(ctx).get_span_context().trace_id == trace_id
    assert producer.published == 1
    assert producer.failed == producer.dropped_buffer_full == 0


async def test_json_event_from_a_plain_producer_decodes(kafka_settings: KafkaSettings) -> None:
    plain = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap)
    await plain.start()
    try:
        await plain.send_and_wait(
            kafka_settings.topic("feedback"),
            b'{"predictionId": "p-2", "label": {"boolLabel": false}}',
            key=b"p-2",
            headers=[json_header()],
        )
        await plain.send_and_wait(
            kafka_settings.topic("feedback"), encode_event_json(feedback("p-3")), key=b"p-3"
        )
    finally:
        await plain.stop()

    records = await read_records(kafka_settings, Topic.FEEDBACK, 2)
    decoded = {r.key: decode_event(events_pb2.FeedbackEvent, r.value, r.headers) for r in records}
    assert decoded == {b"p-2": feedback("p-2", label=False), b"p-3": feedback("p-3")}


async def test_malformed_bytes_raise_invalid_input(kafka_settings: KafkaSettings) -> None:
    plain = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap)
    await plain.start()
    try:
        await plain.send_and_wait(kafka_settings.topic("feedback"), b"\xff\xfe\x00garbage")
    finally:
        await plain.stop()

    (record,) = await read_records(kafka_settings, Topic.FEEDBACK, 1)
    with pytest.raises(InvalidInput, match="malformed protobuf FeedbackEvent"):
        decode_event(events_pb2.FeedbackEvent, record.value, record.headers)


async def test_dead_letter_keeps_original_bytes_and_reason(kafka_settings: KafkaSettings) -> None:
    producer = EventProducer(kafka_settings, client_id="test-dlq")
    await producer.start()
    source = kafka_settings.topic("feedback")
    try:
        before = metrics.EVENTS_DEAD_LETTERED.labels(source_topic=source)._value.get()
        await dead_letter(
            producer, b"k-1", b"{not json", "malformed JSON FeedbackEvent", source,
            headers=[("content-type", b"application/json")],
        )  # fmt: skip
    finally:
        await producer.stop(grace_s=5)

    (record,) = await read_records(kafka_settings, Topic.DEAD_LETTER, 1)
    assert (record.key, record.value) == (b"k-1", b"{not json")
    assert header(record.headers, REASON_HEADER) == b"malformed JSON FeedbackEvent"
    assert header(record.headers, SOURCE_TOPIC_HEADER) == source.encode()
    assert header(record.headers, "content-type") == b"application/json"
    after = metrics.EVENTS_DEAD_LETTERED.labels(source_topic=source)._value.get()
    assert after == before + 1


async def test_full_buffer_raises_resource_exhausted(kafka_settings: KafkaSettings) -> None:
    small = kafka_settings.model_copy(update={"producer_buffer_max_events": 3})
    producer = EventProducer(small, client_id="test-full")
    for i in range(3):  # not started yet: nothing drains the buffer
        producer.publish(Topic.FEEDBACK, f"p-{i}", feedback(f"p-{i}"))

    with pytest.raises(ResourceExhausted, match="buffer"):
        producer.publish(Topic.FEEDBACK, "p-3", feedback("p-3"))
    assert producer.dropped_buffer_full == 1
    assert producer.buffered == 3

    await producer.start()
    await producer.stop(grace_s=10)  # the three buffered events are delivered
    assert producer.published == 3 and producer.failed == 0
    records = await read_records(small, Topic.FEEDBACK, 3)
    assert sorted(r.key for r in records) == [b"p-0", b"p-1", b"p-2"]


async def test_publish_during_outage_is_delivered_after_resume(
    broker, kafka_settings: KafkaSettings
) -> None:
    kafka = kafka_settings.model_copy(update={"request_timeout_ms": 1_000})
    producer = EventProducer(kafka, client_id="test-outage", max_retry_backoff_s=0.5)
    await producer.start()
    try:
        producer.publish(Topic.FEEDBACK, "before", feedback("before"))
        await producer._queue.join()
        broker.pause()
        try:
            producer.publish(Topic.FEEDBACK, "during", feedback("during"))

            async def retried() -> bool:
                return producer.retried > 0

            await eventually(retried, timeout_s=10, what="a retry during the outage")
            assert producer.published == 1
        finally:
            broker.resume()
        async with asyncio.timeout(20):
            await producer._queue.join()
    finally:
        await producer.stop(grace_s=5)

    assert producer.failed == 0
    records = await read_records(kafka, Topic.FEEDBACK, 2)
    assert {r.key for r in records} == {b"before", b"during"}  # at least once, maybe twice
    assert encode_event(feedback("during")) in {r.value for r in records}


async def test_ensure_topics_refuses_existing_topics_with_too_few_partitions(broker) -> None:
    prefix = f"{unique_name()}."
    small = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=1)
    await ensure_topics(small, topics=[Topic.FEEDBACK])
    with pytest.raises(FailedPrecondition, match="fewer than 2 partitions"):
        await ensure_topics(small.model_copy(update={"partitions": 2}))


async def test_ensure_topics_refuses_a_join_across_different_partition_counts(broker) -> None:
    prefix = f"{unique_name()}."
    kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=prefix, partitions=2)
    await ensure_topics(kafka, topics=[Topic.PREDICTIONS], partitions=3)
    with pytest.raises(FailedPrecondition, match="same partition count"):
        await ensure_topics(kafka)


async def test_events_published_while_the_broker_is_down_at_start_arrive_once_it_is_up(
    tmp_path,
) -> None:
    port = free_port()
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{port}",
        topic_prefix=f"{unique_name()}.",
        partitions=2,
        request_timeout_ms=1_000,
    )
    producer = EventProducer(kafka, client_id="test-late-broker", max_retry_backoff_s=0.3)
    late = TansuBroker(port=port, log_path=tmp_path / "tansu.log")
    try:
        await producer.start()  # nothing listens yet: start must not fail
        producer.publish(Topic.FEEDBACK, "early", feedback("early"))

        async def retried() -> bool:
            return producer.retried > 0

        await eventually(retried, timeout_s=10, what="a retry while no broker listens")
        late.start()
        await ensure_topics(kafka)
        await producer.flush(timeout_s=20)
        assert producer.published == 1 and producer.failed == 0
        (record,) = await read_records(kafka, Topic.FEEDBACK, 1)
        assert record.key == b"early"
    finally:
        await producer.stop(grace_s=2)
        late.stop()


async def test_stop_counts_undeliverable_events_as_failed() -> None:
    kafka = KafkaSettings(
        bootstrap=f"127.0.0.1:{free_port()}", topic_prefix="x.", request_timeout_ms=500
    )
    producer = EventProducer(kafka, client_id="test-no-broker")
    await producer.start()
    producer.publish(Topic.ALERTS, "m", events_pb2.Alert(alert_id="a"))
    producer.publish(Topic.ALERTS, "m", events_pb2.Alert(alert_id="b"))
    await producer.stop(grace_s=0.5)

    assert producer.failed == 2 and producer.published == 0
    with pytest.raises(Unavailable, match="stopping"):
        producer.publish(Topic.ALERTS, "m", events_pb2.Alert(alert_id="c"))


async def test_group_consumer_commits_only_what_was_processed(
    kafka_settings: KafkaSettings,
) -> None:
    producer = EventProducer(kafka_settings, client_id="test-group")
    await producer.start()
    for i in range(4):
        producer.publish(Topic.FEEDBACK, "same-key", feedback(f"p-{i}"))
    await producer.stop(grace_s=10)

    consumer = make_consumer(
        kafka_settings, [Topic.FEEDBACK], group_id=unique_name("g"), client_id="test-group"
    )
    await consumer.start()
    try:
        seen: list[ConsumerRecord] = []

        async def all_four() -> bool:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(part)
            return len(seen) >= 4

        await eventually(all_four, timeout_s=30, what="four records through the group")
        ids = [
            decode_event(events_pb2.FeedbackEvent, r.value, r.headers).prediction_id for r in seen
        ]
        assert ids == ["p-0", "p-1", "p-2", "p-3"]  # one key, one partition: in order

        tp = TopicPartition(seen[0].topic, seen[0].partition)
        await consumer.commit({tp: seen[2].offset + 1})  # the first three are processed
        assert await consumer.committed(tp) == seen[2].offset + 1
    finally:
        await consumer.stop()


async def test_a_burst_is_batched_and_fully_delivered(kafka_settings: KafkaSettings) -> None:
    producer = EventProducer(kafka_settings, client_id="test-burst")
    await producer.start()
    try:
        for i in range(3000):
            producer.publish(Topic.PREDICTIONS, f"p-{i}", events_pb2.PredictionEvent(model="m"))
        acked = await asyncio.gather(
            *(producer.send_and_wait(Topic.ALERTS, "m", events_pb2.Alert()) for _ in range(3))
        )
        assert len({(m.partition, m.offset) for m in acked}) == 3
        await producer.flush(timeout_s=30)
    finally:
        await producer.stop(grace_s=5)
    assert producer.published == 3003
    assert producer.failed == producer.dropped_buffer_full == 0
    records = await read_records(kafka_settings, Topic.PREDICTIONS, 3000, timeout_s=30)
    assert len({r.key for r in records}) == 3000
