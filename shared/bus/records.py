"""The one consumed-record type: what every consumer hands to its handlers.

An aiokafka ``ConsumerRecord`` and a Faust message carry the same fields;
:meth:`ConsumedRecord.of` copies them into one frozen value, with the headers
as a tuple of ``(name, value)`` pairs (a header sent without a value, e.g.
``kcat -H name``, keeps ``None``).

>>> from aiokafka import ConsumerRecord
>>> raw = ConsumerRecord("hw.feedback", 2, 41, 0, 0, b"p-1", b"{}", None, 3, 2,
...                      [("content-type", b"application/json"), ("flag", None)])
>>> record = ConsumedRecord.of(raw)
>>> record.topic, record.partition, record.offset, record.key
('hw.feedback', 2, 41, b'p-1')
>>> record.headers
(('content-type', b'application/json'), ('flag', None))
>>> record.valued_headers
(('content-type', b'application/json'),)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from headwater.shared.bus.codec import Header, decode_event

M = TypeVar("M", bound=Message)


class RawRecord(Protocol):
    """What an aiokafka ``ConsumerRecord`` and a Faust message both have."""

    @property
    def topic(self) -> str:
        """Broker-side topic name."""

    @property
    def partition(self) -> int:
        """Partition number."""

    @property
    def offset(self) -> int:
        """Offset in the partition."""

    @property
    def key(self) -> bytes | None:
        """Key bytes."""

    @property
    def value(self) -> bytes | None:
        """Value bytes (None for a tombstone)."""

    @property
    def headers(self) -> Any:
        """Pairs of name and value (or a mapping of them), as the client gives them."""


def record_headers(raw: Any) -> tuple[Header, ...]:
    """Headers as a tuple of ``(name, bytes or None)``, from pairs or a mapping.

    >>> record_headers({"a": b"1"})
    (('a', b'1'),)
    >>> record_headers(None)
    ()
    >>> record_headers([("a", "text")])
    Traceback (most recent call last):
    ...
    TypeError: string argument without an encoding

    Raises:
        TypeError: A header is not a (name, bytes or None) pair.
        ValueError: A header is not a pair.

    """
    if not raw:
        return ()
    items = raw.items() if hasattr(raw, "items") else raw
    return tuple((str(k), None if v is None else bytes(v)) for k, v in items)


@dataclass(frozen=True)
class ConsumedRecord:
    """One record as read from the broker.

    Attributes:
        topic: Broker-side topic name (with the prefix).
        partition: Partition number.
        offset: Offset in the partition.
        key: Key bytes.
        value: Value bytes (None for a tombstone).
        headers: The headers, in order; a header without a value has None.

    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()

    @classmethod
    def of(cls, raw: RawRecord) -> ConsumedRecord:
        """The record of an aiokafka ``ConsumerRecord`` or a Faust message.

        Raises:
            TypeError: A header no client should send (not a name and bytes or None).
            ValueError: A header that is not a pair.

        """
        headers = record_headers(raw.headers)
        return cls(raw.topic, raw.partition, raw.offset, raw.key, raw.value, headers)

    @classmethod
    def without_headers(cls, raw: RawRecord) -> ConsumedRecord:
        """The record with no headers (what is left of one whose headers cannot be read)."""
        return cls(raw.topic, raw.partition, raw.offset, raw.key, raw.value)

    @property
    def valued_headers(self) -> tuple[tuple[str, bytes], ...]:
        """The headers that have a value."""
        return tuple((k, v) for k, v in self.headers if v is not None)

    def decode(self, cls: type[M]) -> M:
        """The value as a ``cls`` event (protobuf or its JSON mapping, per ``content-type``).

        >>> from headwater.shared.pb import events_pb2
        >>> ConsumedRecord("t", 0, 0, None, b'{"predictionId": "p"}').decode(
        ...     events_pb2.FeedbackEvent
        ... ).prediction_id
        'p'

        Raises:
            InvalidInput: The value is missing, malformed, or of an unsupported content type.

        """
        return decode_event(cls, self.value, self.valued_headers)
