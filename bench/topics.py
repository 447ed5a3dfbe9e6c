"""Reading a whole topic back, group-less, to count and time what the services wrote."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord

from headwater.shared.bus.consumer import assign_all_partitions
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
    records: list[ConsumerRecord] = []
    async with asyncio.timeout(timeout_s):
        assigned = await assign_all_partitions(
            kafka, [topic], from_beginning=True, client_id="bench-reader"
        )
        consumer, ends = assigned.consumer, assigned.end_offsets
        try:
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
