"""Dead-letter routing: a record no consumer can process keeps its bytes and says why.

The dead-letter record has the original key and value, unchanged, and headers:

- ``x-dead-letter-reason``: why it was rejected (UTF-8, at most 1000 bytes),
- ``x-dead-letter-source-topic``: the broker-side topic it came from,
- ``x-dead-letter-truncated``: only when the value was too large to send: the
  original size in bytes (ASCII digits); the value is then a prefix of it,
- the original headers, kept after those (so its trace and content-type survive).

>>> for name, value in dead_letter_headers("bad JSON", "hw.feedback", [("content-type", b"x")]):
...     print(name, value)
x-dead-letter-reason b'bad JSON'
x-dead-letter-source-topic b'hw.feedback'
content-type b'x'

Consumers dead-letter through
:class:`~headwater.shared.bus.record_policy.RecordPolicy`, which calls
:func:`dead_letter_reliably`: retry with capped backoff until the broker
acknowledges (so the consumer may then commit past the record), give up only
when the consumer is stopping (then raise Unavailable and do not commit: the
record is read again after the restart), and truncate a value too large to
send rather than lose it. Delivery is at least once: an attempt that timed out
may have been written, so the dead-letter topic can hold a record twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from aiokafka.structs import RecordMetadata

from headwater.shared.bus import metrics
from headwater.shared.bus.codec import Header
from headwater.shared.bus.producer import EventProducer, OutgoingRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

REASON_HEADER = "x-dead-letter-reason"
SOURCE_TOPIC_HEADER = "x-dead-letter-source-topic"
TRUNCATED_HEADER = "x-dead-letter-truncated"
_OWN_HEADERS = (REASON_HEADER, SOURCE_TOPIC_HEADER, TRUNCATED_HEADER)
_MAX_REASON_BYTES = 1000
#: Room kept under the producer's request size for the record's key, headers and framing.
ENVELOPE_BYTES = 16 * 1024
#: Smallest prefix a too-large value is cut down to before giving up.
MIN_VALUE_BYTES = 1024
_STOP_POLL_S = 0.05


def dead_letter_headers(
    reason: str,
    source_topic: str,
    original: Iterable[Header] | None = None,
    truncated_from: int | None = None,
) -> list[Header]:
    """The headers of a dead-letter record (its own first, then the original ones).

    >>> dead_letter_headers("too big", "hw.x", truncated_from=5_000_000)[2]
    ('x-dead-letter-truncated', b'5000000')
    """
    kept = [(k, v) for k, v in original or () if k not in _OWN_HEADERS]
    own: list[Header] = [
        (REASON_HEADER, reason.encode("utf-8")[:_MAX_REASON_BYTES]),
        (SOURCE_TOPIC_HEADER, source_topic.encode("utf-8")),
    ]
    if truncated_from is not None:
        own.append((TRUNCATED_HEADER, str(truncated_from).encode("ascii")))
    return own + kept


async def dead_letter(
    producer: EventProducer,
    record_key: bytes | None,
    record_value: bytes | None,
    reason: str,
    source_topic: str,
    headers: Iterable[Header] | None = None,
    truncated_from: int | None = None,
) -> RecordMetadata:
    """Write a rejected record's original bytes to ``dead-letter`` and wait for the ack (once).

    Waits for the acknowledgement so a consumer commits the source offset only
    once the record is safe in the dead-letter topic. One attempt: consumers
    use :func:`dead_letter_reliably`, which retries.

    Args:
        producer: A started producer.
        record_key: The original key bytes.
        record_value: The original value bytes (None for a tombstone).
        reason: Why the record was rejected (e.g. the InvalidInput message).
        source_topic: Broker-side topic the record came from.
        headers: The original record's headers, kept on the dead-letter record.
        truncated_from: The original value's size when ``record_value`` is a prefix of it.

    Raises:
        Unavailable: The broker did not acknowledge in time (do not commit the offset).
        ResourceExhausted: The record is larger than the producer or broker accepts.

    """
    record = OutgoingRecord(
        Topic.DEAD_LETTER,
        record_key,
        record_value if record_value is not None else b"",
        tuple(dead_letter_headers(reason, source_topic, headers, truncated_from)),
    )
    meta = await producer.send_raw_and_wait(record)
    metrics.EVENTS_DEAD_LETTERED.labels(source_topic=source_topic).inc()
    log.warning("record dead-lettered", extra={"source_topic": source_topic, "reason": reason})
    return meta


async def dead_letter_reliably(
    producer: EventProducer,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    source_topic: str,
    headers: Iterable[Header] = (),
    stopping: Callable[[], bool] = lambda: False,
    max_backoff_s: float = 2.0,
    max_value_bytes: int | None = None,
) -> RecordMetadata:
    """Dead-letter a record, retrying until the broker acknowledges it (see the module doc).

    A value larger than ``max_value_bytes`` (default: the producer's request
    size less :data:`ENVELOPE_BYTES`) is cut to a prefix of that size and the
    record gets ``x-dead-letter-truncated: <original size>``; if the broker
    still refuses it as too large, the prefix is halved (down to
    :data:`MIN_VALUE_BYTES`).

    Args:
        producer: A started producer.
        key: The original key bytes.
        value: The original value bytes (None for a tombstone).
        reason: Why the record was rejected.
        source_topic: Broker-side topic the record came from.
        headers: The original record's headers.
        stopping: Returns True once the caller is shutting down: stop retrying.
        max_backoff_s: Cap of the exponential backoff between attempts.
        max_value_bytes: Largest value sent whole.

    Returns:
        The acknowledged record's metadata (commit past the source record now).

    Raises:
        Unavailable: ``stopping()`` turned true before an acknowledgement (do not commit).
        ResourceExhausted: Even a :data:`MIN_VALUE_BYTES` prefix was refused as too large.

    """
    original = value if value is not None else b""
    limit = max_value_bytes if max_value_bytes is not None else _default_limit(producer, key)
    backoff = Backoff(initial_s=0.1, max_s=max_backoff_s, jitter=0.5)
    attempt = 0
    while True:
        if stopping():
            raise Unavailable(f"stopping before the dead-letter record of {source_topic} was acked")
        body = original[:limit]
        truncated_from = len(original) if len(body) < len(original) else None
        try:
            return await dead_letter(
                producer, key, body, reason, source_topic, headers, truncated_from
            )
        except ResourceExhausted:
            if len(body) <= MIN_VALUE_BYTES:
                raise
            limit = max(MIN_VALUE_BYTES, len(body) // 2)
            log.warning("dead-letter record too large; truncating", extra={"bytes": limit})
        except Unavailable as err:
            metrics.EVENTS_RETRIED.labels(topic=Topic.DEAD_LETTER.value).inc()
            delay = backoff.delay_s(attempt)
            log.warning(
                "dead-letter write failed; retrying",
                extra={"source_topic": source_topic, "attempt": attempt + 1, "error": str(err)},
            )
            await _sleep_unless_stopping(delay, stopping)
            attempt += 1


def _default_limit(producer: EventProducer, key: bytes | None) -> int:
    return max(MIN_VALUE_BYTES, producer.max_request_size - ENVELOPE_BYTES - len(key or b""))


async def _sleep_unless_stopping(delay_s: float, stopping: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + delay_s
    # ``stopping`` is a plain callable (no event to wait on): poll it between short sleeps.
    while not stopping() and (left := until - loop.time()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(left, _STOP_POLL_S))
