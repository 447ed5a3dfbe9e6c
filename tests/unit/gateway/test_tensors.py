"""Decoding OIP v2 input tensors into feature rows."""

from __future__ import annotations

import numpy as np
import pytest

from headwater.services.gateway.tensors import decode_rows
from headwater.shared.errors import InvalidInput
from headwater.shared.features import FeatureSchema, FeatureSpec
from headwater.shared.pb import oip_pb2

SCHEMA = FeatureSchema(
    (
        FeatureSpec("amount", "float"),
        FeatureSpec("count", "int"),
        FeatureSpec("city", "str", required=False),
        FeatureSpec("vip", "bool", required=False),
    )
)
NUMERIC = FeatureSchema(
    (FeatureSpec("a", "float"), FeatureSpec("b", "int"), FeatureSpec("c", "bool"))
)


def bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(len(i).to_bytes(4, "little") + i for i in items)


def raw_request(*tensors: tuple[str, str, list[int], bytes]) -> oip_pb2.ModelInferRequest:
    request = oip_pb2.ModelInferRequest(model_name="m")
    for name, datatype, shape, data in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(data)
    return request


def typed_request(*tensors: tuple[str, str, list[int], str, list]) -> oip_pb2.ModelInferRequest:
    request = oip_pb2.ModelInferRequest(model_name="m")
    for name, datatype, shape, field, values in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(values)
    return request


def error_of(request: oip_pb2.ModelInferRequest, schema=SCHEMA, max_batch_rows: int = 16) -> str:
    with pytest.raises(InvalidInput) as caught:
        decode_rows(request, schema, max_batch_rows)
    return str(caught.value)


# --- per-feature layout -------------------------------------------------------------------


def test_per_feature_raw_with_bytes_and_bool() -> None:
    request = raw_request(
        ("amount", "FP32", [2], np.array([1.5, 2.5], "<f4").tobytes()),
        ("count", "INT32", [2, 1], np.array([[3], [4]], "<i4").tobytes()),
        ("city", "BYTES", [2], bytes_tensor(["Zürich".encode(), b"Bern"])),
        ("vip", "BOOL", [2], np.array([True, False]).tobytes()),
    )
    rows = decode_rows(request, SCHEMA, 16)
    assert rows == [
        {"amount": 1.5, "count": 3, "city": "Zürich", "vip": True},
        {"amount": 2.5, "count": 4, "city": "Bern", "vip": False},
    ]
    assert [type(v) for v in rows[0].values()] == [float, int, str, bool]


def test_per_feature_typed_contents_in_any_order() -> None:
    request = typed_request(
        ("city", "BYTES", [1], "bytes_contents", [b"Basel"]),
        ("count", "UINT64", [1], "uint64_contents", [7]),
        ("amount", "INT64", [1, 1], "int64_contents", [10]),
    )
    assert decode_rows(request, SCHEMA, 16) == [{"amount": 10.0, "count": 7, "city": "Basel"}]


def test_optional_features_may_be_left_out() -> None:
    request = typed_request(
        ("amount", "FP64", [1], "fp64_contents", [0.25]),
        ("count", "INT8", [1], "int_contents", [-3]),
    )
    assert decode_rows(request, SCHEMA, 16) == [{"amount": 0.25, "count": -3}]


@pytest.mark.parametrize(
    ("datatype", "dtype", "field"),
    [
        ("INT8", "<i1", "int_contents"),
        ("INT16", "<i2", "int_contents"),
        ("INT32", "<i4", "int_contents"),
        ("INT64", "<i8", "int64_contents"),
        ("UINT8", "<u1", "uint_contents"),
        ("UINT16", "<u2", "uint_contents"),
        ("UINT32", "<u4", "uint_contents"),
        ("UINT64", "<u8", "uint64_contents"),
    ],
)
def test_every_integer_datatype_raw_and_typed(datatype: str, dtype: str, field: str) -> None:
    schema = FeatureSchema((FeatureSpec("n", "int"),))
    raw = raw_request(("n", datatype, [3], np.array([0, 1, 100], dtype).tobytes()))
    typed = typed_request(("n", datatype, [3], field, [0, 1, 100]))
    assert (
        decode_rows(raw, schema, 4)
        == decode_rows(typed, schema, 4)
        == [
            {"n": 0},
            {"n": 1},
            {"n": 100},
        ]
    )


# --- dense layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["input__0", "features"])
def test_dense_raw_fp32(name: str) -> None:
    matrix = np.array([[0.5, 2, 1], [1.5, 3, 0]], "<f4")
    rows = decode_rows(raw_request((name, "FP32", [2, 3], matrix.tobytes())), NUMERIC, 16)
    assert rows == [{"a": 0.5, "b": 2, "c": True}, {"a": 1.5, "b": 3, "c": False}]
    assert [type(v) for v in rows[0].values()] == [float, int, bool]


def test_dense_typed_fp64() -> None:
    request = typed_request(("x", "FP64", [1, 3], "fp64_contents", [0.1, -4, 1]))
    assert decode_rows(request, NUMERIC, 16) == [{"a": 0.1, "b": -4, "c": True}]


def test_dense_single_feature_schema() -> None:
    schema = FeatureSchema((FeatureSpec("x", "float"),))
    request = typed_request(("input__0", "FP64", [2, 1], "fp64_contents", [1.0, 2.0]))
    assert decode_rows(request, schema, 16) == [{"x": 1.0}, {"x": 2.0}]


# --- errors ----------------------------------------------------------------------------------


def test_no_inputs() -> None:
    assert error_of(oip_pb2.ModelInferRequest(model_name="m")) == "the request has no input tensors"


def test_wrong_datatype_names_tensor_and_choices() -> None:
    request = typed_request(
        ("amount", "FP64", [1], "fp64_contents", [1.0]),
        ("count", "FP64", [1], "fp64_contents", [1.0]),
    )
    message = error_of(request)
    assert message.startswith("input 'count': wrong datatype FP64 for feature type int;")
    assert "INT64" in message


def test_unsupported_datatype() -> None:
    request = typed_request(("amount", "FP16", [1], "fp32_contents", [1.0]))
    assert error_of(request).startswith("input 'amount': unsupported datatype 'FP16'")


def test_string_feature_needs_bytes() -> None:
    request = typed_request(
        ("amount", "FP64", [1], "fp64_contents", [1.0]),
        ("count", "INT64", [1], "int64_contents", [1]),
        ("city", "INT64", [1], "int64_contents", [1]),
    )
    assert "input 'city': wrong datatype INT64 for feature type str; expected one of BYTES" in (
        error_of(request)
    )


def test_shape_mismatch_per_feature() -> None:
    request = typed_request(("amount", "FP64", [1, 2], "fp64_contents", [1.0, 2.0]))
    assert error_of(request) == "input 'amount': shape [1, 2] must be [batch] or [batch, 1]"


def test_shape_mismatch_dense() -> None:
    request = typed_request(("input__0", "FP64", [1, 2], "fp64_contents", [1.0, 2.0]))
    assert error_of(request, NUMERIC).startswith(
        "input 'input__0': shape [1, 2] does not match [batch, 3]"
    )


def test_dense_must_be_floating_point() -> None:
    request = typed_request(("input__0", "INT64", [1, 3], "int64_contents", [1, 2, 3]))
    assert "must be FP32 or FP64 of shape [batch, 3] (columns a, b, c), got datatype INT64" in (
        error_of(request, NUMERIC)
    )


def test_dense_cannot_carry_strings() -> None:
    request = typed_request(("input__0", "FP64", [1, 4], "fp64_contents", [1, 2, 3, 0]))
    assert "feature 'city' is a string and cannot be sent in a dense FP tensor" in error_of(request)


def test_dense_int_and_bool_columns_are_checked() -> None:
    not_int = typed_request(("x", "FP64", [1, 3], "fp64_contents", [1.0, 2.5, 1]))
    assert error_of(not_int, NUMERIC) == "input 'x': feature 'b' is an int but row 0 holds 2.5"
    not_bool = typed_request(("x", "FP64", [1, 3], "fp64_contents", [1.0, 2, 2]))
    assert "feature 'c' is a bool (0 or 1) but row 0 holds 2.0" in error_of(not_bool, NUMERIC)


def test_content_length_mismatch_typed() -> None:
    request = typed_request(("amount", "FP64", [3], "fp64_contents", [1.0, 2.0]))
    assert error_of(request) == (
        "input 'amount': content length mismatch: contents.fp64_contents has 2 elements, "
        "shape [3] needs 3"
    )


def test_content_in_wrong_typed_field() -> None:
    request = typed_request(("amount", "FP64", [1], "fp32_contents", [1.0]))
    assert "contents.fp64_contents has 0 elements" in error_of(request)


def test_content_length_mismatch_raw() -> None:
    request = raw_request(("amount", "FP32", [2], np.array([1.0], "<f4").tobytes()))
    assert error_of(request) == (
        "input 'amount': content length mismatch: raw_input_contents has 4 bytes, "
        "shape and FP32 need 8"
    )


def test_raw_bytes_count_and_truncation() -> None:
    base = [("amount", "FP64", [2], np.array([1.0, 2.0], "<f8").tobytes())]
    base.append(("count", "INT64", [2], np.array([1, 2], "<i8").tobytes()))
    too_few = raw_request(*base, ("city", "BYTES", [2], bytes_tensor([b"x"])))
    assert "input 'city': content length mismatch: raw BYTES content has 1 elements" in (
        error_of(too_few)
    )
    truncated = raw_request(*base, ("city", "BYTES", [2], bytes_tensor([b"x", b"yz"])[:-1]))
    assert error_of(truncated) == "input 'city': raw BYTES content is truncated"


def test_bytes_must_be_utf8() -> None:
    request = typed_request(
        ("amount", "FP64", [1], "fp64_contents", [1.0]),
        ("count", "INT64", [1], "int64_contents", [1]),
        ("city", "BYTES", [1], "bytes_contents", [b"\xff"]),
    )
    assert error_of(request) == "input 'city': value at row 0 is not valid UTF-8"


def test_raw_entries_must_match_inputs() -> None:
    request = raw_request(("amount", "FP64", [1], np.array([1.0]).tobytes()))
    request.inputs.add(name="count", datatype="INT64", shape=[1])
    assert error_of(request) == "raw_input_contents has 1 entries for 2 input tensors"


def test_raw_and_typed_together() -> None:
    request = raw_request(("amount", "FP64", [1], np.array([1.0]).tobytes()))
    request.inputs[0].contents.fp64_contents.append(1.0)
    assert "both contents and raw_input_contents are set" in error_of(request)


def test_missing_required_feature() -> None:
    request = typed_request(("amount", "FP64", [1], "fp64_contents", [1.0]))
    assert error_of(request) == "missing required feature(s): count"


def test_unknown_tensor_name() -> None:
    request = typed_request(
        ("amount", "FP64", [1], "fp64_contents", [1.0]),
        ("colour", "FP64", [1], "fp64_contents", [1.0]),
    )
    assert error_of(request).startswith(
        "unknown input tensor 'colour': send one tensor per feature"
    )


def test_duplicate_tensor() -> None:
    request = typed_request(
        ("amount", "FP64", [1], "fp64_contents", [1.0]),
        ("amount", "FP64", [1], "fp64_contents", [1.0]),
    )
    assert error_of(request) == "input 'amount' is given more than once"


def test_inconsistent_batch() -> None:
    request = typed_request(
        ("amount", "FP64", [2], "fp64_contents", [1.0, 2.0]),
        ("count", "INT64", [1], "int64_contents", [1]),
    )
    assert error_of(request) == "input 'count' has a batch of 1 rows, other inputs have 2"


def test_empty_and_oversized_batch() -> None:
    empty = typed_request(("x", "FP64", [0, 3], "fp64_contents", []))
    assert error_of(empty, NUMERIC) == "input 'x': the batch is empty; send at least one row"
    big = typed_request(("x", "FP64", [17, 3], "fp64_contents", [0.0] * 51))
    assert error_of(big, NUMERIC) == "input 'x': batch of 17 rows is over the limit of 16"


def test_negative_shape() -> None:
    request = typed_request(("amount", "FP64", [-1], "fp64_contents", [1.0]))
    assert error_of(request) == "input 'amount': invalid shape [-1]"


@pytest.mark.parametrize(("value", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_values(value: float, shown: str) -> None:
    per_feature = raw_request(("amount", "FP32", [2], np.array([1.0, value], "<f4").tobytes()))
    assert error_of(per_feature).startswith(f"input 'amount': value at row 1 is {shown};")
    dense = typed_request(("x", "FP64", [2, 3], "fp64_contents", [0, 1, 1, 0, value, 1]))
    assert error_of(dense, NUMERIC).startswith(f"input 'x': value at row 1, column 1 is {shown};")


def test_narrow_integer_out_of_range() -> None:
    request = typed_request(("count", "INT8", [1], "int_contents", [300]))
    schema = FeatureSchema((FeatureSpec("count", "int"),))
    assert error_of(request, schema) == "input 'count': value 300 at row 0 is out of range for INT8"


def test_int_feature_refuses_uint64_beyond_int64() -> None:
    schema = FeatureSchema((FeatureSpec("n", "int"),))
    values = [1, 2**63, 2**64 - 1]
    expected = (
        "input 'n': value 9223372036854775808 at row 1 is out of the int64 range of an int feature"
    )
    typed = typed_request(("n", "UINT64", [3], "uint64_contents", values))
    assert error_of(typed, schema) == expected
    raw = raw_request(("n", "UINT64", [3], np.array(values, "<u8").tobytes()))
    assert error_of(raw, schema) == expected
    top = typed_request(("n", "UINT64", [1], "uint64_contents", [2**63 - 1]))
    assert decode_rows(top, schema, 4) == [{"n": 2**63 - 1}]
    as_float = FeatureSchema((FeatureSpec("n", "float"),))
    assert decode_rows(typed, as_float, 4)[2] == {"n": float(2**64 - 1)}


def test_dense_int_column_refuses_values_beyond_int64() -> None:
    request = typed_request(("x", "FP64", [2, 3], "fp64_contents", [1, 2, 1, 1, 1e19, 0]))
    assert error_of(request, NUMERIC) == (
        "input 'x' (feature 'b'): value 1e+19 at row 1 is out of the int64 range of an int feature"
    )
    low = typed_request(("x", "FP64", [1, 3], "fp64_contents", [1, -(2.0**63), 0]))
    assert decode_rows(low, NUMERIC, 4) == [{"a": 1.0, "b": -(2**63), "c": False}]
