"""ConsumedRecord: one record type from aiokafka records and Faust messages alike."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord
from faust.types.tuples import Message

from headwater.shared.bus.codec import json_header
from headwater.shared.bus.records import ConsumedRecord, record_headers
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2


def test_an_aiokafka_record_and_a_faust_message_give_the_same_record() -> None:
    headers = [("content-type", b"application/json"), ("flag", None)]
    kafka = ConsumerRecord("hw.examples", 3, 17, 0, 0, b"m", b"{}", None, 1, 2, headers)
    faust = Message("hw.examples", 3, 17, 0.0, 0, headers, b"m", b"{}", None)
    expected = ConsumedRecord(
        "hw.examples", 3, 17, b"m", b"{}", (("content-type", b"application/json"), ("flag", None))
    )
    assert ConsumedRecord.of(kafka) == ConsumedRecord.of(faust) == expected


def test_headers_come_from_pairs_or_a_mapping_and_null_values_stay_none() -> None:
    assert record_headers([("a", b"1"), ("b", None)]) == (("a", b"1"), ("b", None))
    assert record_headers({"a": bytearray(b"1")}) == (("a", b"1"),)
    assert record_headers([]) == record_headers(None) == ()


@pytest.mark.parametrize("bad", [[("a", "text")], [("a", b"1", b"2")], [object()]])
def test_headers_no_client_should_send_are_refused(bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        record_headers(bad)


def test_a_record_without_headers_keeps_its_position_and_bytes() -> None:
    raw = ConsumerRecord("t", 1, 9, 0, 0, b"k", b"v", None, 1, 1, [("a", "not bytes")])
    assert ConsumedRecord.without_headers(raw) == ConsumedRecord("t", 1, 9, b"k", b"v")


def test_decode_reads_the_content_type_of_valued_headers_only() -> None:
    event = events_pb2.FeedbackEvent(prediction_id="p-1")
    record = ConsumedRecord(
        "t", 0, 0, b"p-1", b'{"predictionId": "p-1"}', (json_header(), ("x", None))
    )
    assert record.valued_headers == (json_header(),)
    assert record.decode(events_pb2.FeedbackEvent) == event
    with pytest.raises(InvalidInput, match="has no value"):
        ConsumedRecord("t", 0, 0, None, None).decode(events_pb2.FeedbackEvent)


def test_it_is_a_frozen_value() -> None:
    record = ConsumedRecord("t", 0, 0, None, None)
    with pytest.raises(AttributeError):
        record.offset = 1  # type: ignore[misc]
