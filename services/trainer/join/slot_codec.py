"""The join slot codec: a :class:`Slot` as bytes in the changelog-backed table.

Flags in the state byte tell the formats apart, so a slot an older trainer
wrote to the changelog still decodes, and an older trainer refuses a newer
slot (an unknown state) rather than misreading it:

* no flag: the ``>BdI`` header (state, expiry, partition), then the payload;
  still written for a slot that holds nothing more;
* ``0x80`` (traced): the waiting side's trace headers follow the header;
* ``0x40`` (shadowed): then the label a joined slot keeps, its trace headers,
  the waiting shadow predictions (id, trace headers, payload) and the ids of
  the joined ones.

>>> slot = Slot(SlotState.JOINED, 12.5, 3, label=b"f", joined_shadows=("p~v2",))
>>> encode_slot(slot)[0] == SlotState.JOINED.value | 0x40
True
>>> decode_slot(encode_slot(slot)) == slot
True
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from headwater.services.trainer.join.slots import Slot, SlotState, TraceHeaders, WaitingShadow
from headwater.shared.errors import InvalidInput

T = TypeVar("T")

_HEADER = struct.Struct(">BdI")
#: Set in the state byte when trace headers follow the fixed header (older slots lack them).
_TRACED = 0x80
#: Set in the state byte when the shadow part follows (slots before shadow joins lack it).
_SHADOWED = 0x40
_COUNT = struct.Struct(">B")
_NAME = struct.Struct(">B")
_VALUE = struct.Struct(">H")
_ID = struct.Struct(">H")
_BLOB = struct.Struct(">I")


@dataclass(frozen=True)
class _ShadowPart:
    """What the shadowed format adds to a slot (empty in the older formats)."""

    label: bytes = b""
    label_trace: TraceHeaders = ()
    shadows: tuple[WaitingShadow, ...] = ()
    joined_shadows: tuple[str, ...] = ()


def encode_slot(slot: Slot) -> bytes:
    """Serialise a slot for a changelog-backed table (state, expiry, partition, trace, payload).

    A slot without trace headers, label or shadows is written as before either
    existed; with trace headers, the state byte has its high bit set and the
    headers follow the fixed header as a count and length-prefixed names and
    values; the shadow part (flag ``0x40``) follows them.

    >>> slot = Slot(SlotState.AWAITING_FEEDBACK, 12.5, 3, b"event")
    >>> decode_slot(encode_slot(slot)) == slot
    True
    >>> traced = Slot(SlotState.AWAITING_FEEDBACK, 12.5, 3, b"event", (("traceparent", b"00-ab"),))
    >>> decode_slot(encode_slot(traced)) == traced
    True

    Raises:
        InvalidInput: More than 255 trace headers or shadow predictions, a name
            over 255 bytes, a value or shadow id over 65535 bytes.

    """
    part = _ShadowPart(slot.label, slot.label_trace, slot.shadows, slot.joined_shadows)
    flags = (_TRACED if slot.trace else 0) | (_SHADOWED if part != _ShadowPart() else 0)
    encoded = [_HEADER.pack(slot.state.value | flags, slot.expires_at, slot.partition)]
    if slot.trace:
        encoded.append(_encode_trace(slot.trace))
    if flags & _SHADOWED:
        encoded.append(_encode_shadow_part(part))
    encoded.append(slot.payload)
    return b"".join(encoded)


def _encode_trace(trace: TraceHeaders) -> bytes:
    if len(trace) > 255:
        raise InvalidInput(f"a join slot holds at most 255 trace headers, got {len(trace)}")
    parts = [_COUNT.pack(len(trace))]
    for name, value in trace:
        encoded = name.encode("utf-8")
        if len(encoded) > 255 or len(value) > 65535:
            raise InvalidInput(f"trace header {name[:64]!r} too long for a join slot")
        parts += [_NAME.pack(len(encoded)), encoded, _VALUE.pack(len(value)), value]
    return b"".join(parts)


def _encode_shadow_part(part: _ShadowPart) -> bytes:
    if max(len(part.shadows), len(part.joined_shadows)) > 255:
        raise InvalidInput("a join slot holds at most 255 waiting and 255 joined shadows")
    parts = [_BLOB.pack(len(part.label)), part.label, _encode_trace(part.label_trace)]
    parts.append(_COUNT.pack(len(part.shadows)))
    for shadow in part.shadows:
        parts += [_encode_id(shadow.prediction_id), _encode_trace(shadow.trace)]
        parts += [_BLOB.pack(len(shadow.payload)), shadow.payload]
    parts.append(_COUNT.pack(len(part.joined_shadows)))
    parts += [_encode_id(prediction_id) for prediction_id in part.joined_shadows]
    return b"".join(parts)


def _encode_id(prediction_id: str) -> bytes:
    encoded = prediction_id.encode("utf-8")
    if len(encoded) > 65535:
        raise InvalidInput(f"shadow prediction id {prediction_id[:64]!r} too long for a join slot")
    return _ID.pack(len(encoded)) + encoded


def decode_slot(data: bytes) -> Slot:
    """Parse what :func:`encode_slot` wrote, in any of its formats.

    Raises:
        InvalidInput: The bytes are not an encoded slot.

    >>> decode_slot(b"xx")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: join slot too short: 2 bytes

    """
    if len(data) < _HEADER.size:
        raise InvalidInput(f"join slot too short: {len(data)} bytes")
    state, expires_at, partition = _HEADER.unpack_from(data)
    try:
        slot_state = SlotState(state & ~(_TRACED | _SHADOWED))
    except ValueError as err:
        raise InvalidInput(f"join slot has unknown state {state}") from err
    reader = _Reader(bytes(data), _HEADER.size)
    trace = _section(reader, "trace headers", _read_trace) if state & _TRACED else ()
    part = _section(reader, "shadows", _read_shadow_part) if state & _SHADOWED else _ShadowPart()
    return Slot(
        slot_state,
        expires_at,
        partition,
        reader.rest(),
        trace,
        label=part.label,
        label_trace=part.label_trace,
        shadows=part.shadows,
        joined_shadows=part.joined_shadows,
    )


class _Truncated(Exception):
    """The bytes end inside a field."""


class _Reader:
    """Reads fields of a slot in order, from an offset."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._data):
            raise _Truncated
        value, self._offset = self._data[self._offset : end], end
        return value

    def number(self, field: struct.Struct) -> int:
        (value,) = field.unpack(self.take(field.size))
        return int(value)

    def sized(self, length: struct.Struct) -> bytes:
        return self.take(self.number(length))

    def rest(self) -> bytes:
        return self._data[self._offset :]


def _section(reader: _Reader, name: str, read: Callable[[_Reader], T]) -> T:
    """``read(reader)``, its failures as ``InvalidInput`` naming the section."""
    try:
        return read(reader)
    except _Truncated:
        raise InvalidInput(f"join slot {name} truncated") from None
    except UnicodeDecodeError as err:
        raise InvalidInput(f"join slot {name} unreadable: {err}") from err


def _read_trace(reader: _Reader) -> TraceHeaders:
    count = reader.number(_COUNT)
    return tuple((reader.sized(_NAME).decode("utf-8"), reader.sized(_VALUE)) for _ in range(count))


def _read_shadow_part(reader: _Reader) -> _ShadowPart:
    label = reader.sized(_BLOB)
    label_trace = _read_trace(reader)
    shadows = tuple(_read_shadow(reader) for _ in range(reader.number(_COUNT)))
    joined = tuple(reader.sized(_ID).decode("utf-8") for _ in range(reader.number(_COUNT)))
    return _ShadowPart(label, label_trace, shadows, joined)


def _read_shadow(reader: _Reader) -> WaitingShadow:
    prediction_id = reader.sized(_ID).decode("utf-8")
    trace = _read_trace(reader)
    return WaitingShadow(prediction_id, reader.sized(_BLOB), trace)
