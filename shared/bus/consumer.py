"""aiokafka consumers with headwater's settings: manual commits, after processing.

A consumer loop reads a batch, processes every record (or dead-letters it),
then commits with :func:`commit_processed`, so a crash re-delivers what was not
processed (at least once) and never skips a record.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from headwater.shared.bus.topics import Topic, topic_name
from headwater.shared.settings import KafkaSettings


def make_consumer(
    kafka: KafkaSettings,
    topics: Iterable[Topic],
    group_id: str | None,
    client_id: str,
    *,
    from_beginning: bool = True,
    max_poll_records: int = 500,
    session_timeout_ms: int = 10_000,
) -> AIOKafkaConsumer:
    """A consumer subscribed to ``topics`` (not started) with auto-commit off.

    Args:
        kafka: Broker address, prefix and request timeout.
        topics: Logical topics to subscribe to.
        group_id: Consumer group; None for a group-less consumer (assign partitions yourself).
        client_id: Names the consumer on the broker.
        from_beginning: Where a group without committed offsets starts.
        max_poll_records: Most records one ``getmany`` returns.
        session_timeout_ms: How long the group waits for a silent member.

    """
    names = [topic_name(kafka, t) for t in topics]
    consumer = AIOKafkaConsumer(
        *(names if group_id is not None else ()),
        bootstrap_servers=kafka.bootstrap,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        request_timeout_ms=max(kafka.request_timeout_ms, session_timeout_ms + 5_000),
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(100, session_timeout_ms // 3),
        max_poll_records=max_poll_records,
    )
    return consumer


def next_offsets(records: Iterable[ConsumerRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit once ``records`` are processed (last offset + 1 per partition).

    >>> from types import SimpleNamespace as R
    >>> batch = [R(topic="t", partition=0, offset=4), R(topic="t", partition=0, offset=7)]
    >>> offsets = next_offsets(batch)
    >>> offsets[TopicPartition("t", 0)].offset
    8
    """
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        offsets[tp] = max(offsets.get(tp, -1), record.offset + 1)
    return {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()}


async def commit_processed(consumer: AIOKafkaConsumer, records: Iterable[ConsumerRecord]) -> None:
    """Commit the offsets after ``records`` (call once they are fully processed)."""
    offsets = next_offsets(records)
    if offsets:
        await consumer.commit(offsets)
