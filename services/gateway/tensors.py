"""Decoding OIP v2 requests into feature rows and version numbers (pure, no I/O).

Two layouts are accepted:

- one tensor per feature, named as in the schema, shape ``[batch]`` or
  ``[batch, 1]``, with a datatype that fits the feature's type;
- one FP32 or FP64 tensor of shape ``[batch, n_features]`` (any name, e.g.
  ``input__0``), its columns in schema order.

Values come either in the typed ``contents`` field of the tensor or in
``raw_input_contents`` (little-endian, row-major; a BYTES element is a 4-byte
little-endian length followed by its bytes). Every problem raises
:class:`InvalidInput` naming the tensor and what is wrong.

>>> from headwater.shared.features import FeatureSchema, FeatureSpec
>>> schema = FeatureSchema((FeatureSpec("x", "float"), FeatureSpec("n", "int")))
>>> request = oip_pb2.ModelInferRequest(model_name="m")
>>> dense = request.inputs.add(name="input__0", datatype="FP64", shape=[2, 2])
>>> dense.contents.fp64_contents.extend([0.5, 1.0, 1.5, 2.0])
>>> decode_rows(request, schema, max_batch_rows=8)
[{'x': 0.5, 'n': 1}, {'x': 1.5, 'n': 2}]

>>> request = oip_pb2.ModelInferRequest(model_name="m")
>>> x = request.inputs.add(name="x", datatype="FP32", shape=[1])
>>> x.contents.fp32_contents.append(float("nan"))
>>> n = request.inputs.add(name="n", datatype="INT64", shape=[1, 1])
>>> n.contents.int64_contents.append(3)
>>> try:
...     decode_rows(request, schema, max_batch_rows=8)
... except InvalidInput as error:
...     print(error)
input 'x': value at row 0 is nan; NaN and infinity are not accepted
"""

from __future__ import annotations

import math
from typing import TypeAlias

import numpy as np

from headwater.shared.errors import InvalidInput
from headwater.shared.features import FeatureSchema, FeatureSpec
from headwater.shared.oip_datatypes import (
    DATATYPES,
    OipDatatype,
    accepted_datatypes,
    typed_contents,
    unpack_raw_bytes,
)
from headwater.shared.pb import oip_pb2

Value: TypeAlias = float | int | str | bool
Row: TypeAlias = dict[str, Value]
InputTensor: TypeAlias = oip_pb2.ModelInferRequest.InferInputTensor


def decode_rows(
    request: oip_pb2.ModelInferRequest, schema: FeatureSchema, max_batch_rows: int
) -> list[Row]:
    """Decode the inputs of ``request`` into one feature dict per row, in schema order.

    Args:
        request: The OIP request; only ``inputs`` and ``raw_input_contents`` are read.
        schema: The model's features, in the column order of a dense tensor.
        max_batch_rows: The largest batch accepted.

    Returns:
        One dict per row; optional features without a tensor are absent.

    Raises:
        InvalidInput: Naming the tensor and the problem.

    """
    inputs = list(request.inputs)
    if not inputs:
        raise InvalidInput("the request has no input tensors")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(inputs):
        raise InvalidInput(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} input tensors"
        )
    names = {f.name for f in schema.features}
    if len(inputs) == 1 and inputs[0].name not in names:
        return _decode_dense(inputs[0], raw[0] if raw else None, schema, max_batch_rows)
    return _decode_per_feature(inputs, raw, schema, max_batch_rows)


def _decode_dense(
    tensor: InputTensor, raw: bytes | None, schema: FeatureSchema, max_batch_rows: int
) -> list[Row]:
    name = tensor.name
    if tensor.datatype not in ("FP32", "FP64"):
        names = ", ".join(f.name for f in schema.features)
        raise InvalidInput(
            f"input '{name}': a single tensor that is not named after a feature must be "
            f"FP32 or FP64 of shape [batch, {len(schema)}] (columns {names}), "
            f"got datatype {tensor.datatype or '(empty)'}"
        )
    shape = _shape(tensor)
    if len(shape) != 2 or shape[1] != len(schema):
        raise InvalidInput(
            f"input '{name}': shape {shape} does not match [batch, {len(schema)}] "
            f"(one column per feature, in schema order)"
        )
    batch = _check_batch(name, shape[0], max_batch_rows)
    matrix = _values(tensor, raw, batch * len(schema)).reshape(batch, len(schema))
    _check_finite(name, matrix.reshape(-1), columns=len(schema))
    columns = [_dense_column(name, f, matrix[:, i]) for i, f in enumerate(schema.features)]
    keys = [f.name for f in schema.features]
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]


def _dense_column(tensor: str, feature: FeatureSpec, column: np.ndarray) -> list[Value]:
    kind = feature.type
    if kind == "str":
        raise InvalidInput(
            f"input '{tensor}': feature '{feature.name}' is a string and cannot be sent in a "
            f"dense FP tensor; send one tensor per feature (BYTES for '{feature.name}')"
        )
    if kind == "int":
        bad = np.flatnonzero(column != np.round(column))
        if bad.size:
            raise InvalidInput(
                f"input '{tensor}': feature '{feature.name}' is an int but row {bad[0]} "
                f"holds {float(column[bad[0]])!r}"
            )
        _check_int64(tensor, column, f" (feature '{feature.name}')")
        return [int(v) for v in column.tolist()]
    if kind == "bool":
        bad = np.flatnonzero((column != 0) & (column != 1))
        if bad.size:
            raise InvalidInput(
                f"input '{tensor}': feature '{feature.name}' is a bool (0 or 1) but row "
                f"{bad[0]} holds {float(column[bad[0]])!r}"
            )
        return [bool(v) for v in column.tolist()]
    return [float(v) for v in column.tolist()]


def _decode_per_feature(
    inputs: list[InputTensor],
    raw: list[bytes],
    schema: FeatureSchema,
    max_batch_rows: int,
) -> list[Row]:
    by_name = {f.name: f for f in schema.features}
    seen: dict[str, list[Value]] = {}
    batch: int | None = None
    for index, tensor in enumerate(inputs):
        feature = by_name.get(tensor.name)
        if feature is None:
            raise InvalidInput(_unknown_tensor(tensor.name, schema))
        if tensor.name in seen:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        rows = _feature_rows(tensor, max_batch_rows)
        if batch is not None and rows != batch:
            raise InvalidInput(
                f"input '{tensor.name}' has a batch of {rows} rows, other inputs have {batch}"
            )
        batch = rows
        seen[tensor.name] = _feature_column(tensor, raw[index] if raw else None, feature, rows)
    missing = [f.name for f in schema.features if f.required and f.name not in seen]
    if missing:
        raise InvalidInput(f"missing required feature(s): {', '.join(missing)}")
    keys = [f.name for f in schema.features if f.name in seen]
    columns = [seen[k] for k in keys]
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]


def _unknown_tensor(name: str, schema: FeatureSchema) -> str:
    names = ", ".join(f.name for f in schema.features)
    return (
        f"unknown input tensor '{name}': send one tensor per feature ({names}) "
        f"or a single FP32/FP64 tensor of shape [batch, {len(schema)}]"
    )


def _feature_rows(tensor: InputTensor, max_batch_rows: int) -> int:
    shape = _shape(tensor)
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return _check_batch(tensor.name, shape[0], max_batch_rows)
    raise InvalidInput(f"input '{tensor.name}': shape {shape} must be [batch] or [batch, 1]")


def _feature_column(
    tensor: InputTensor, raw: bytes | None, feature: FeatureSpec, rows: int
) -> list[Value]:
    datatype = _datatype(tensor)
    if datatype.name not in accepted_datatypes(feature.type):
        expected = ", ".join(accepted_datatypes(feature.type))
        raise InvalidInput(
            f"input '{tensor.name}': wrong datatype {datatype.name} for feature type "
            f"{feature.type}; expected one of {expected}"
        )
    values = _values(tensor, raw, rows)
    if datatype.kind == "bytes":
        return [_text(tensor.name, i, v) for i, v in enumerate(values.tolist())]
    if datatype.kind == "float":
        _check_finite(tensor.name, values)
    if feature.type == "float":
        return [float(v) for v in values.tolist()]
    if feature.type == "int":
        _check_int64(tensor.name, values)
    return list(values.tolist())


_INT64 = np.iinfo(np.int64)
_TWO_63 = 2.0**63


def _check_int64(tensor: str, values: np.ndarray, where: str = "") -> None:
    """Refuse values outside the int64 range an ``int`` feature holds (e.g. UINT64 > 2**63-1).

    >>> _check_int64("n", np.array([2**63], dtype=np.uint64))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: input 'n': value 9223372036854775808 at row 0 \
is out of the int64 range of an int feature
    """
    if values.dtype.kind == "u":
        bad = np.flatnonzero(values > np.uint64(_INT64.max))
    elif values.dtype.kind == "f":  # 2**63 is exact as a float; int64 holds [-2**63, 2**63)
        bad = np.flatnonzero((values < -_TWO_63) | (values >= _TWO_63))
    else:
        return
    if bad.size:
        index = int(bad[0])
        value = values[index]
        shown = int(value) if values.dtype.kind == "u" else float(value)
        raise InvalidInput(
            f"input '{tensor}'{where}: value {shown!r} at row {index} is out of the int64 "
            f"range of an int feature"
        )


def _text(tensor: str, row: int, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{tensor}': value at row {row} is not valid UTF-8") from None


def _shape(tensor: InputTensor) -> list[int]:
    shape = list(tensor.shape)
    if not shape or any(d < 0 for d in shape):
        raise InvalidInput(f"input '{tensor.name}': invalid shape {shape}")
    return shape


def _check_batch(tensor: str, rows: int, max_batch_rows: int) -> int:
    if rows < 1:
        raise InvalidInput(f"input '{tensor}': the batch is empty; send at least one row")
    if rows > max_batch_rows:
        raise InvalidInput(
            f"input '{tensor}': batch of {rows} rows is over the limit of {max_batch_rows}"
        )
    return rows


def _datatype(tensor: InputTensor) -> OipDatatype:
    datatype = DATATYPES.get(tensor.datatype)
    if datatype is None:
        raise InvalidInput(
            f"input '{tensor.name}': unsupported datatype '{tensor.datatype}'; "
            f"expected one of {', '.join(DATATYPES)}"
        )
    return datatype


def _values(tensor: InputTensor, raw: bytes | None, count: int) -> np.ndarray:
    """The ``count`` elements of a tensor, from raw bytes or typed contents."""
    datatype = _datatype(tensor)
    if raw is not None:
        if _has_contents(tensor):
            raise InvalidInput(
                f"input '{tensor.name}': both contents and raw_input_contents are set"
            )
        if datatype.kind == "bytes":
            return _raw_bytes(tensor.name, raw, count)
        expected = count * datatype.dtype.itemsize
        if len(raw) != expected:
            raise InvalidInput(
                f"input '{tensor.name}': content length mismatch: raw_input_contents has "
                f"{len(raw)} bytes, shape and {datatype.name} need {expected}"
            )
        return np.frombuffer(raw, dtype=datatype.dtype)
    values = typed_contents(tensor.contents, datatype.name)
    if len(values) != count:
        raise InvalidInput(
            f"input '{tensor.name}': content length mismatch: contents.{datatype.field} has "
            f"{len(values)} elements, shape {list(tensor.shape)} needs {count}"
        )
    if datatype.kind == "bytes":
        return np.array(list(values), dtype=object)
    return _narrow(tensor.name, datatype, np.asarray(values, dtype=datatype.field_dtype))


def _narrow(tensor: str, datatype: OipDatatype, values: np.ndarray) -> np.ndarray:
    """Check typed contents fit a datatype narrower than their field (e.g. INT8 in int32)."""
    target = datatype.dtype.newbyteorder("=")
    if values.dtype == target:
        return values
    info = np.iinfo(target)
    bad = np.flatnonzero((values < info.min) | (values > info.max))
    if bad.size:
        raise InvalidInput(
            f"input '{tensor}': value {values[bad[0]]} at row {bad[0]} is out of range "
            f"for {datatype.name}"
        )
    return values.astype(target)


def _has_contents(tensor: InputTensor) -> bool:
    return any(len(getattr(tensor.contents, dt.field)) for dt in DATATYPES.values())


def _raw_bytes(tensor: str, raw: bytes, count: int) -> np.ndarray:
    """The ``count`` elements of a raw BYTES tensor."""
    try:
        items = unpack_raw_bytes(raw)
    except InvalidInput as error:
        raise InvalidInput(f"input '{tensor}': {error}") from None
    if len(items) != count:
        raise InvalidInput(
            f"input '{tensor}': content length mismatch: raw BYTES content has "
            f"{len(items)} elements, the shape needs {count}"
        )
    return np.array(items, dtype=object)


def _check_finite(tensor: str, values: np.ndarray, columns: int = 0) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        index = int(bad[0])
        where = f"row {index // columns}, column {index % columns}" if columns else f"row {index}"
        raise InvalidInput(
            f"input '{tensor}': value at {where} is {_show(values[index])}; "
            f"NaN and infinity are not accepted"
        )


def _show(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def parse_version(text: str, field: str = "model_version") -> int:
    """A version number given as text (OIP carries versions as strings).

    >>> parse_version("3")
    3
    >>> parse_version("latest")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: model_version must be a version number, got 'latest'

    Raises:
        InvalidInput: ``text`` is not an integer (the message names ``field``).

    """
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"{field} must be a version number, got {text!r}") from None
