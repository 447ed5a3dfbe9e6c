"""dead_letter_reliably against the real broker: outages, stopping, oversize values."""

from __future__ import annotations

import asyncio

import pytest

from headwater.shared.bus import metrics
from headwater.shared.bus.codec import header
from headwater.shared.bus.dead_letter import (
    REASON_HEADER,
    SOURCE_TOPIC_HEADER,
    TRUNCATED_HEADER,
    dead_letter_reliably,
)
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import Unavailable
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, read_records

pytestmark = pytest.mark.integration


def retries() -> float:
    return metrics.EVENTS_RETRIED.labels(topic=Topic.DEAD_LETTER.value)._value.get()


async def started(kafka: KafkaSettings, client_id: str, **options) -> EventProducer:
    producer = EventProducer(kafka, client_id=client_id, create_topics=False, **options)
    await producer.start()
    return producer


async def test_a_dead_letter_written_during_an_outage_is_acked_after_resume(
    broker, kafka_settings: KafkaSettings
) -> None:
    kafka = kafka_settings.model_copy(update={"request_timeout_ms": 1_000})
    producer = await started(kafka, "test-dlq-outage")
    before = retries()
    source = kafka.topic("feedback")
    try:
        broker.pause()
        try:
            task = asyncio.create_task(
                dead_letter_reliably(producer, b"k", b"bad", "malformed", source, max_backoff_s=0.3)
            )

            async def retried() -> bool:
                return retries() > before

            await eventually(retried, timeout_s=10, what="a dead-letter retry during the outage")
            assert not task.done()
        finally:
            broker.resume()
        async with asyncio.timeout(30):
            meta = await task
    finally:
        await producer.stop(grace_s=5)

    assert meta.topic == kafka.topic("dead-letter")
    records = await read_records(kafka, Topic.DEAD_LETTER, 1)
    assert {(r.key, r.value) for r in records} == {(b"k", b"bad")}  # at least once
    assert header(records[0].headers, REASON_HEADER) == b"malformed"
    assert header(records[0].headers, SOURCE_TOPIC_HEADER) == source.encode()


async def test_stopping_during_an_outage_raises_unavailable(
    broker, kafka_settings: KafkaSettings
) -> None:
    kafka = kafka_settings.model_copy(update={"request_timeout_ms": 500})
    producer = await started(kafka, "test-dlq-stopping")
    before = retries()
    try:
        broker.pause()
        try:
            with pytest.raises(Unavailable, match="stopping"):
                async with asyncio.timeout(10):
                    await dead_letter_reliably(
                        producer,
                        b"k",
                        b"v",
                        "bug",
                        kafka.topic("examples"),
                        stopping=lambda: retries() > before,
                    )
        finally:
            broker.resume()
    finally:
        await producer.stop(grace_s=5)


async def test_an_oversize_value_is_truncated_to_a_prefix_with_its_size(
    kafka_settings: KafkaSettings,
) -> None:
    producer = await started(kafka_settings, "test-dlq-oversize")  # 1 MiB requests
    value = bytes(range(256)) * (3 * 4096)  # 3 MiB
    try:
        await dead_letter_reliably(
            producer, b"big", value, "too big to learn", kafka_settings.topic("model-updates"),
            headers=[("content-type", b"application/x-protobuf")],
        )  # fmt: skip
    finally:
        await producer.stop(grace_s=5)

    (record,) = await read_records(kafka_settings, Topic.DEAD_LETTER, 1)
    assert header(record.headers, TRUNCATED_HEADER) == str(len(value)).encode()
    assert 0 < len(record.value) < producer.max_request_size
    assert value.startswith(record.value)
    assert header(record.headers, "content-type") == b"application/x-protobuf"


async def test_a_value_the_client_refuses_is_halved_until_it_fits(
    kafka_settings: KafkaSettings,
) -> None:
    producer = await started(kafka_settings, "test-dlq-halve", max_request_size=20_000)
    value = b"x" * 100_000
    try:
        await dead_letter_reliably(
            producer, b"k", value, "r", "src", max_value_bytes=60_000
        )  # 60 000 is refused by the client; 30 000 too; 15 000 fits
    finally:
        await producer.stop(grace_s=5)

    (record,) = await read_records(kafka_settings, Topic.DEAD_LETTER, 1)
    assert record.value == value[:15_000]
    assert header(record.headers, TRUNCATED_HEADER) == b"100000"


async def test_a_small_value_is_sent_whole_without_the_truncated_header(
    kafka_settings: KafkaSettings,
) -> None:
    producer = await started(kafka_settings, "test-dlq-small")
    try:
        await dead_letter_reliably(producer, None, None, "tombstone", "src")
    finally:
        await producer.stop(grace_s=5)

    (record,) = await read_records(kafka_settings, Topic.DEAD_LETTER, 1)
    assert (record.key, record.value) == (None, b"")
    assert header(record.headers, TRUNCATED_HEADER) is None
