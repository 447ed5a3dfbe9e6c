"""Event codec: protobuf by default, the protobuf JSON mapping accepted, errors named."""

from __future__ import annotations

import pytest

from headwater.shared.bus.codec import (
    content_type,
    decode_event,
    encode_event,
    encode_event_json,
    json_header,
    protobuf_header,
)
from headwater.shared.bus.tracing import extract_trace_context, inject_trace_headers
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2


def prediction() -> events_pb2.PredictionEvent:
    event = events_pb2.PredictionEvent(prediction_id="p-9", model="churn", version=3)
    event.features["age"].int_value = 41
    event.features["plan"].string_value = "pro"
    event.features["score"].float_value = 0.25
    event.prediction.bool_label = True
    event.proba["True"] = 0.8
    event.predicted_at.FromSeconds(1_700_000_000)
    return event


def test_protobuf_round_trip_with_maps_oneofs_and_timestamps() -> None:
    event = prediction()
    value = encode_event(event)
    assert decode_event(events_pb2.PredictionEvent, value, [protobuf_header()]) == event
    assert decode_event(events_pb2.PredictionEvent, value, None) == event  # no header


def test_encoding_is_deterministic_whatever_the_map_insertion_order() -> None:
    a = events_pb2.Alert(alert_id="a")
    a.values["x"] = 1.0
    a.values["y"] = 2.0
    b = events_pb2.Alert(alert_id="a")
    b.values["y"] = 2.0
    b.values["x"] = 1.0
    assert encode_event(a) == encode_event(b)


def test_json_round_trip_by_header_and_by_sniffing() -> None:
    event = prediction()
    value = encode_event_json(event)
    assert decode_event(events_pb2.PredictionEvent, value, [json_header()]) == event
    assert decode_event(events_pb2.PredictionEvent, b"  \n" + value, []) == event


def test_json_accepts_original_field_names_and_charset_parameters() -> None:
    value = b'{"prediction_id": "p-1", "label": {"int_label": 2}}'
    headers = [("Content-Type", b"application/json; charset=utf-8")]
    event = decode_event(events_pb2.FeedbackEvent, value, headers)
    assert event.prediction_id == "p-1" and event.label.int_label == 2


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"\xff\xff\xff", [protobuf_header()], "malformed protobuf FeedbackEvent"),
        (b'{"predictionId": ', [], "malformed JSON FeedbackEvent"),
        (b'{"predictionIdd": "p"}', [], "predictionIdd"),
        (b'{"predictionId": 5}', [json_header()], "malformed JSON"),
        (b"\xff{", [json_header()], "malformed JSON"),
        (b"{}", [("content-type", b"text/csv")], "unsupported content-type 'text/csv'"),
    ],
)
def test_malformed_values_raise_invalid_input_with_the_reason(
    value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(InvalidInput, match=reason):
        decode_event(events_pb2.FeedbackEvent, value, headers)


def test_missing_value_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="no value"):
        decode_event(events_pb2.FeedbackEvent, None, [])


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("content-type", b"application/x-protobuf")], "protobuf"),
        ([("content-type", b"application/protobuf")], "protobuf"),
        ([("content-type", b"application/vnd.headwater+json")], "json"),
        ([("CONTENT-TYPE", b"Application/JSON")], "json"),
        ([], "protobuf"),
    ],
)
def test_content_type_resolution(headers: list[tuple[str, bytes]], expected: str) -> None:
    assert content_type(b"\x0a\x01x", headers) == expected


def test_trace_headers_ignore_garbage() -> None:
    assert inject_trace_headers() == []
    ctx = extract_trace_context([("traceparent", b"\xff\xfe"), ("other", b"x")])
    from opentelemetry import trace

    assert not trace.get_current_span(ctx).get_span_context().is_valid
