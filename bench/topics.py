"""Reading a whole topic back, group-less, to count and time what the services wrote."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from headwater.shared.bus.topics import Topic
from headwater.shared.settings import KafkaSettings


async def read_topic(
    kafka: KafkaSettings, topic: Topic, timeout_s: float = 30.0
) -> tuple[list[ConsumerRecord], int]:
    """Every record of ``topic`` from the beginning, and the sum of its end offsets.

    Tansu reports a partition's end offset as the base offset of its last
    record batch plus one, so the end offsets can trail the records: this reads
    past them until a fetch comes back empty.
    """
    name = kafka.topic(topic.value)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(timeout_s):
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(name) or set()
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(name) or set()
            assigned = [TopicPartition(name, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            ends = await consumer.end_offsets(assigned)
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for part in batch.values():
                    records.extend(part)
                behind = [tp for tp, end in ends.items() if await consumer.position(tp) < end]
                if not batch and not behind:
                    break
        finally:
            await consumer.stop()
    return records, int(sum(ends.values()))
