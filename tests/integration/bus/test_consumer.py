"""assign_all_partitions against the real broker: every partition, positions set, no group."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from headwater.shared.bus.consumer import AssignedConsumer, assign_all_partitions
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import Unavailable
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings
from tests.conftest import TEST_PARTITIONS
from tests.fixtures import eventually, unique_name

pytestmark = pytest.mark.integration


async def publish(kafka: KafkaSettings, keys: list[str]) -> None:
    producer = EventProducer(kafka, client_id="test-assign", create_topics=False)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(
                Topic.ALERTS, key, events_pb2.Alert(alert_id=key, model=key)
            )
    finally:
        await producer.stop(grace_s=5)


async def read_until(assigned: AssignedConsumer, count: int) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []

    async def enough() -> bool:
        for part in (await assigned.consumer.getmany(timeout_ms=100)).values():
            records.extend(part)
        return len(records) >= count

    await eventually(enough, timeout_s=15, what=f"{count} records")
    return records


async def test_every_partition_of_every_topic_from_the_beginning(
    kafka_settings: KafkaSettings,
) -> None:
    keys = [f"m-{i}" for i in range(8)]
    await publish(kafka_settings, keys)

    assigned = await assign_all_partitions(
        kafka_settings, [Topic.ALERTS, Topic.FEEDBACK], from_beginning=True
    )
    try:
        expected = {
            TopicPartition(kafka_settings.topic(t), p)
            for t in ("alerts", "feedback")
            for p in range(TEST_PARTITIONS)
        }
        assert set(assigned.partitions) == assigned.consumer.assignment() == expected
        assert sum(assigned.end_offsets.values()) == len(keys)
        records = await read_until(assigned, len(keys))
    finally:
        await assigned.consumer.stop()
    assert sorted(r.key.decode() for r in records) == keys
    assert {r.partition for r in records} == set(range(TEST_PARTITIONS))  # both partitions read


async def test_from_the_end_reads_only_what_comes_after(kafka_settings: KafkaSettings) -> None:
    await publish(kafka_settings, ["old-1", "old-2", "old-3"])

    assigned = await assign_all_partitions(kafka_settings, [Topic.ALERTS], from_beginning=False)
    try:
        for tp in assigned.partitions:  # positions are set before it returns
            assert await assigned.consumer.position(tp) == assigned.end_offsets[tp]
        await publish(kafka_settings, ["new-1"])
        (record,) = await read_until(assigned, 1)
    finally:
        await assigned.consumer.stop()
    assert record.key == b"new-1"


async def test_a_missing_topic_is_unavailable_and_not_created(broker) -> None:
    kafka = KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=f"{unique_name()}.")

    with pytest.raises(Unavailable, match="do not exist"):
        await assign_all_partitions(kafka, [Topic.ALERTS], from_beginning=True, timeout_s=10)

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        assert kafka.topic("alerts") not in await admin.list_topics()
    finally:
        await admin.close()
