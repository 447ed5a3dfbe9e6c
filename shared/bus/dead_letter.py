"""Dead-letter routing: a record no consumer can process keeps its bytes and says why.

The dead-letter record has the original key and value, unchanged, and headers:

- ``x-dead-letter-reason``: why it was rejected (UTF-8, at most 1000 bytes),
- ``x-dead-letter-source-topic``: the broker-side topic it came from,
- the original headers, kept after those (so its trace and content-type survive).

>>> for name, value in dead_letter_headers("bad JSON", "hw.feedback", [("content-type", b"x")]):
...     print(name, value)
x-dead-letter-reason b'bad JSON'
x-dead-letter-source-topic b'hw.feedback'
content-type b'x'
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka.structs import RecordMetadata

from headwater.shared.bus import metrics
from headwater.shared.bus.producer import EventProducer, OutgoingRecord
from headwater.shared.bus.topics import Topic

log = logging.getLogger(__name__)

REASON_HEADER = "x-dead-letter-reason"
SOURCE_TOPIC_HEADER = "x-dead-letter-source-topic"
_MAX_REASON_BYTES = 1000


def dead_letter_headers(
    reason: str, source_topic: str, original: Iterable[tuple[str, bytes]] | None = None
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record (reason and source first, then the original ones)."""
    kept = [(k, v) for k, v in original or () if k not in (REASON_HEADER, SOURCE_TOPIC_HEADER)]
    return [
        (REASON_HEADER, reason.encode("utf-8")[:_MAX_REASON_BYTES]),
        (SOURCE_TOPIC_HEADER, source_topic.encode("utf-8")),
        *kept,
    ]


async def dead_letter(
    producer: EventProducer,
    record_key: bytes | None,
    record_value: bytes | None,
    reason: str,
    source_topic: str,
    headers: Iterable[tuple[str, bytes]] | None = None,
) -> RecordMetadata:
    """Write a rejected record's original bytes to ``dead-letter`` and wait for the ack.

    Waits for the acknowledgement so a consumer commits the source offset only
    once the record is safe in the dead-letter topic.

    Args:
        producer: A started producer.
        record_key: The original key bytes.
        record_value: The original value bytes (None for a tombstone).
        reason: Why the record was rejected (e.g. the InvalidInput message).
        source_topic: Broker-side topic the record came from.
        headers: The original record's headers, kept on the dead-letter record.

    Raises:
        Unavailable: The broker did not acknowledge in time (do not commit the offset).

    """
    record = OutgoingRecord(
        Topic.DEAD_LETTER,
        record_key,
        record_value if record_value is not None else b"",
        tuple(dead_letter_headers(reason, source_topic, headers)),
    )
    meta = await producer.send_raw_and_wait(record)
    metrics.EVENTS_DEAD_LETTERED.labels(source_topic=source_topic).inc()
    log.warning("record dead-lettered", extra={"source_topic": source_topic, "reason": reason})
    return meta
