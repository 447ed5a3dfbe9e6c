r"""The OIP v2 tensor datatypes, in one table (pure, no I/O).

Every datatype has a numpy dtype for its elements on the wire (little-endian,
as ``raw_input_contents`` and ``raw_output_contents`` carry them), the
``InferTensorContents`` field that carries them typed, the numpy dtype of that
field's elements (several narrow datatypes share a wider field: INT8 travels
in the int32 ``int_contents``), and its kind of value. A raw BYTES element is
a 4-byte little-endian length followed by its bytes.

>>> fp32 = DATATYPES["FP32"]
>>> fp32.field, fp32.dtype.itemsize
('fp32_contents', 4)
>>> int8 = DATATYPES["INT8"]
>>> int8.field, int8.field_dtype, int8.kind
('int_contents', dtype('int32'), 'int')
>>> pack_raw("FP64", [0.5])
b'\x00\x00\x00\x00\x00\x00\xe0?'
>>> pack_raw("BYTES", [b"ab", b""])
b'\x02\x00\x00\x00ab\x00\x00\x00\x00'
>>> unpack_raw_bytes(pack_raw("BYTES", [b"ab", b""]))
[b'ab', b'']
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

import numpy as np

from headwater.shared.errors import InvalidInput
from headwater.shared.pb import oip_pb2

DatatypeKind: TypeAlias = Literal["bool", "int", "float", "bytes"]


@dataclass(frozen=True)
class OipDatatype:
    """One OIP datatype.

    Attributes:
        name: The OIP name (``FP64``, ``BYTES``, …).
        dtype: The element dtype of raw contents (little-endian; ``object`` for BYTES,
            whose elements have no fixed size).
        field: The ``InferTensorContents`` field of typed contents.
        field_dtype: The element dtype of that field (wider than ``dtype`` for INT8,
            INT16, UINT8, UINT16; ``object`` for BYTES).
        kind: ``bool``, ``int``, ``float`` or ``bytes``.

    """

    name: str
    dtype: np.dtype[Any]
    field: str
    field_dtype: np.dtype[Any]
    kind: DatatypeKind


def _table() -> Mapping[str, OipDatatype]:
    rows: dict[str, tuple[str, str, str, DatatypeKind]] = {
        "BOOL": ("?", "bool_contents", "?", "bool"),
        "INT8": ("<i1", "int_contents", "i4", "int"),
        "INT16": ("<i2", "int_contents", "i4", "int"),
        "INT32": ("<i4", "int_contents", "i4", "int"),
        "INT64": ("<i8", "int64_contents", "i8", "int"),
        "UINT8": ("<u1", "uint_contents", "u4", "int"),
        "UINT16": ("<u2", "uint_contents", "u4", "int"),
        "UINT32": ("<u4", "uint_contents", "u4", "int"),
        "UINT64": ("<u8", "uint64_contents", "u8", "int"),
        "FP32": ("<f4", "fp32_contents", "f4", "float"),
        "FP64": ("<f8", "fp64_contents", "f8", "float"),
        "BYTES": ("O", "bytes_contents", "O", "bytes"),
    }
    return MappingProxyType(
        {
            name: OipDatatype(name, np.dtype(dtype), field, np.dtype(field_dtype), kind)
            for name, (dtype, field, field_dtype, kind) in rows.items()
        }
    )


DATATYPES: Mapping[str, OipDatatype] = _table()

# Which datatype kinds each feature type accepts, and the one it is advertised and sent in.
_ACCEPTED_KINDS: Mapping[str, frozenset[DatatypeKind]] = {
    "float": frozenset({"float", "int"}),
    "int": frozenset({"int"}),
    "str": frozenset({"bytes"}),
    "bool": frozenset({"bool"}),
}
_PREFERRED: Mapping[str, str] = {"float": "FP64", "int": "INT64", "str": "BYTES", "bool": "BOOL"}


def accepted_datatypes(feature_type: str) -> tuple[str, ...]:
    """The OIP datatypes a feature of this type (``float``, ``int``, ``str``, ``bool``) accepts.

    >>> accepted_datatypes("str")
    ('BYTES',)
    >>> accepted_datatypes("int")[:2]
    ('INT8', 'INT16')
    """
    kinds = _ACCEPTED_KINDS[feature_type]
    return tuple(name for name, datatype in DATATYPES.items() if datatype.kind in kinds)


def preferred_datatype(feature_type: str) -> str:
    """The datatype a feature of this type is advertised in (model metadata) and sent in.

    >>> [preferred_datatype(t) for t in ("float", "int", "str", "bool")]
    ['FP64', 'INT64', 'BYTES', 'BOOL']
    """
    return _PREFERRED.get(feature_type, "FP64")


def typed_contents(contents: oip_pb2.InferTensorContents, datatype: str) -> MutableSequence[Any]:
    """The repeated field of ``contents`` that holds values of ``datatype``.

    >>> contents = oip_pb2.InferTensorContents()
    >>> typed_contents(contents, "INT16").extend([1, 2])
    >>> list(contents.int_contents)
    [1, 2]

    Raises:
        KeyError: ``datatype`` is not an OIP datatype.

    """
    return getattr(contents, DATATYPES[datatype].field)  # type: ignore[no-any-return]


def pack_raw(datatype: str, values: Sequence[Any]) -> bytes:
    """The raw contents of ``values`` in ``datatype`` (BYTES elements length-prefixed)."""
    if datatype == "BYTES":
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)
    return np.asarray(values, dtype=DATATYPES[datatype].dtype).tobytes()


def unpack_raw_bytes(raw: bytes) -> list[bytes]:
    r"""Split raw BYTES contents: each element is a uint32 LE length, then its bytes.

    >>> unpack_raw_bytes(b"\x05\x00\x00\x00ab")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: raw BYTES content is truncated

    Raises:
        InvalidInput: A length or an element runs past the end.

    """
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput("raw BYTES content is truncated")
        size = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput("raw BYTES content is truncated")
        items.append(bytes(view[offset : offset + size]))
        offset += size
    return items
