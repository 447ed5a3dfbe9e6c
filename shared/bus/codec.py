r"""Event values on the wire: protobuf binary, or the protobuf JSON mapping.

Producers write protobuf binary with ``content-type: application/x-protobuf``.
Consumers also accept JSON in the protobuf JSON mapping (header
``content-type: application/json``, or, with no header, a value that starts
with ``{``) so any Kafka producer can send feedback or examples.

>>> from headwater.shared.pb import events_pb2
>>> event = events_pb2.FeedbackEvent(prediction_id="p-1")
>>> event.label.bool_label = True
>>> value = encode_event(event)
>>> decode_event(events_pb2.FeedbackEvent, value, [protobuf_header()]) == event
True
>>> decode_event(
...     events_pb2.FeedbackEvent, b'{"predictionId": "p-1", "label": {"boolLabel": true}}', []
... ) == event
True
>>> decode_event(events_pb2.FeedbackEvent, b"\xff\xff", [protobuf_header()])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
headwater.shared.errors.InvalidInput: malformed protobuf FeedbackEvent: Error parsing message ...
>>> decode_event(events_pb2.FeedbackEvent, b'{"predictionId": 3', [])  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
headwater.shared.errors.InvalidInput: malformed JSON FeedbackEvent: ...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from headwater.shared.errors import InvalidInput

CONTENT_TYPE = "content-type"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_PROTOBUF_TYPES = frozenset(
    {
        PROTOBUF,
        "application/protobuf",
        "application/vnd.google.protobuf",
        "application/octet-stream",
    }
)
_JSON_TYPES = frozenset({JSON, "text/json"})

Headers = Iterable[tuple[str, bytes]]
#: One record header as consumed or dead-lettered; Kafka allows a header without a value.
Header = tuple[str, bytes | None]
M = TypeVar("M", bound=Message)


def protobuf_header() -> tuple[str, bytes]:
    """The ``content-type`` header of a protobuf-encoded value."""
    return (CONTENT_TYPE, PROTOBUF.encode())


def json_header() -> tuple[str, bytes]:
    """The ``content-type`` header of a JSON-encoded value."""
    return (CONTENT_TYPE, JSON.encode())


def header(headers: Headers | None, name: str) -> bytes | None:
    """The last value of header ``name`` (case-insensitive), None when absent.

    >>> header([("Content-Type", b"a"), ("x", b"b")], "content-type")
    b'a'
    """
    found = None
    for key, value in headers or ():
        if key.lower() == name:
            found = value
    return found


def encode_event(message: Message) -> bytes:
    """Serialize an event to protobuf binary (deterministic map order)."""
    return message.SerializeToString(deterministic=True)


def encode_event_json(message: Message) -> bytes:
    """Serialize an event to the protobuf JSON mapping (what external producers may send).

    >>> from headwater.shared.pb import events_pb2
    >>> encode_event_json(events_pb2.FeedbackEvent(prediction_id="p-1"))
    b'{"predictionId":"p-1"}'
    """
    text = json_format.MessageToJson(message, indent=None, sort_keys=True)
    return text.replace(", ", ",").replace(": ", ":").encode()


def content_type(value: bytes, headers: Headers | None) -> str:
    r"""``json`` or ``protobuf``: from the header, or sniffed from the value.

    >>> content_type(b'{"a": 1}', None)
    'json'
    >>> content_type(b'\n\x03p-1', None)
    'protobuf'
    >>> content_type(b'x', [("content-type", b"application/json; charset=utf-8")])
    'json'
    >>> content_type(b'x', [("content-type", b"text/csv")])
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: unsupported content-type 'text/csv'
    """
    raw = header(headers, CONTENT_TYPE)
    if raw is None:
        return "json" if value.lstrip()[:1] == b"{" else "protobuf"
    declared = raw.decode("latin-1").split(";", 1)[0].strip().lower()
    if declared in _JSON_TYPES or declared.endswith("+json"):
        return "json"
    if declared in _PROTOBUF_TYPES:
        return "protobuf"
    raise InvalidInput(f"unsupported content-type {declared!r}")


def decode_event(cls: type[M], value: bytes | None, headers: Headers | None = None) -> M:
    """Parse a record value into ``cls``, from protobuf binary or the JSON mapping.

    JSON is parsed strictly: an unknown field name is an error (a typo in a
    hand-written producer must not silently drop data).

    Raises:
        InvalidInput: The value is missing, malformed, or of an unsupported content type.

    """
    name = cls.DESCRIPTOR.name
    if value is None:
        raise InvalidInput(f"{name} record has no value")
    kind = content_type(value, headers)
    if kind == "json":
        try:
            return json_format.Parse(value.decode("utf-8"), cls())
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as err:
            raise InvalidInput(f"malformed JSON {name}: {err}") from None
    try:
        return cls.FromString(value)
    except (DecodeError, ValueError) as err:
        raise InvalidInput(f"malformed protobuf {name}: {err}") from None
