"""In-memory stand-ins the unit tests share.

:class:`FakeProducer` takes the place of an
:class:`~headwater.shared.bus.producer.EventProducer` wherever a service
publishes or dead-letters: it keeps what it is given, and can be made to fail
the ways a broker does (no acknowledgement for a while, a record too large).
"""

from __future__ import annotations

from typing import Any

from aiokafka.structs import RecordMetadata, TopicPartition
from google.protobuf.message import Message

from headwater.shared.bus.producer import OutgoingRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.retry import Backoff

#: A retry that waits next to nothing, for tests of what is retried.
FAST = Backoff(initial_s=0.001, max_s=0.002)


class FakeProducer:
    """Keeps what is published and the records sent (dead letters); fails like a broker if told.

    Args:
        outages: How many sends fail first with Unavailable (not acknowledged).
        too_large: Refuse every send as too large (ResourceExhausted).
        max_request_size: Refuse a record whose value and headers are larger (ResourceExhausted).

    """

    def __init__(
        self, outages: int = 0, too_large: bool = False, max_request_size: int = 1_048_576
    ) -> None:
        self.outages = outages
        self.too_large = too_large
        self.max_request_size = max_request_size
        self.sent: list[OutgoingRecord] = []
        self.published: list[tuple[Topic, Any, Message]] = []

    def publish(self, topic: Topic, key: Any, message: Message, headers: Any = None) -> None:
        self.published.append((topic, key, message))

    async def send_raw_and_wait(self, record: OutgoingRecord) -> RecordMetadata:
        size = len(record.value) + sum(len(value or b"") for _, value in record.headers)
        if self.too_large or size > self.max_request_size:
            raise ResourceExhausted(f"event of {len(record.value)} bytes is too large")
        if self.outages:
            self.outages -= 1
            raise Unavailable("broker did not acknowledge")
        self.sent.append(record)
        return RecordMetadata("dead-letter", 0, TopicPartition("dead-letter", 0), 0, 0, 0, 0)
