from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from headwater.shared.errors import InvalidInput
from headwater.shared.features import (
    FeatureSchema,
    FeatureSpec,
    features_from_proto,
    features_to_proto,
    target_from_proto,
    target_to_proto,
)
from headwater.shared.pb import events_pb2, registry_pb2

SCHEMA = FeatureSchema(
    (
        FeatureSpec("income", "float"),
        FeatureSpec("age", "int"),
        FeatureSpec("city", "str"),
        FeatureSpec("member", "bool", required=False),
        FeatureSpec("score", "float", required=False),
    )
)
ROW = {"income": 1.5, "age": 30, "city": "lima"}


def problem(row: dict[str, Any]) -> str:
    with pytest.raises(InvalidInput) as info:
        SCHEMA.validate_row(row)
    return str(info.value)


def test_names_are_ordered() -> None:
    assert SCHEMA.names == ("income", "age", "city", "member", "score")
    assert SCHEMA.required_names == ("income", "age", "city")
    assert len(SCHEMA) == 5
    assert SCHEMA.get("city") == FeatureSpec("city", "str")
    assert SCHEMA.get("nope") is None


def test_proto_round_trip() -> None:
    model = registry_pb2.Model(name="m", features=SCHEMA.to_proto())
    assert [f.type for f in model.features] == [
        registry_pb2.FEATURE_TYPE_FLOAT,
        registry_pb2.FEATURE_TYPE_INT,
        registry_pb2.FEATURE_TYPE_STR,
        registry_pb2.FEATURE_TYPE_BOOL,
        registry_pb2.FEATURE_TYPE_FLOAT,
    ]
    assert [f.required for f in model.features] == [True, True, True, False, False]
    assert FeatureSchema.from_proto(model) == SCHEMA
    request = registry_pb2.CreateModelRequest(name="m", features=SCHEMA.to_proto())
    assert FeatureSchema.from_proto(request) == SCHEMA


def test_unspecified_proto_type_is_invalid() -> None:
    model = registry_pb2.Model(features=[registry_pb2.Feature(name="x")])
    with pytest.raises(InvalidInput, match="feature 'x' has no type"):
        FeatureSchema.from_proto(model)


def test_schema_itself_is_validated() -> None:
    with pytest.raises(InvalidInput, match="'a' appears twice"):
        FeatureSchema((FeatureSpec("a", "int"), FeatureSpec("a", "float")))
    with pytest.raises(InvalidInput, match="non-empty"):
        FeatureSpec("", "int")
    with pytest.raises(InvalidInput, match="'double'"):
        FeatureSpec("a", "double")  # type: ignore[arg-type]


def test_valid_rows_are_coerced_in_schema_order() -> None:
    row = SCHEMA.validate_row({"city": "lima", "age": 30, "income": 2, "member": False})
    assert row == {"income": 2.0, "age": 30, "city": "lima", "member": False}
    assert list(row) == ["income", "age", "city", "member"]
    assert type(row["income"]) is float


def test_optional_features_stay_absent_and_none_means_absent() -> None:
    assert SCHEMA.validate_row(ROW) == ROW
    assert SCHEMA.validate_row({**ROW, "score": None, "member": None}) == ROW


def test_integral_floats_and_numpy_scalars() -> None:
    row = SCHEMA.validate_row(
        {"income": np.float32(0.5), "age": 41.0, "city": "x", "member": np.bool_(True)}
    )
    assert row == {"income": 0.5, "age": 41, "city": "x", "member": True}
    assert type(row["age"]) is int and type(row["member"]) is bool
    assert SCHEMA.validate_row({**ROW, "age": np.int64(7)})["age"] == 7


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ({"age": 30, "city": "lima"}, ["required feature 'income' is missing"]),
        ({**ROW, "income": None}, ["'income'", "missing"]),
        ({**ROW, "height": 2.0}, ["unknown feature 'height'", "income, age, city"]),
        ({**ROW, "income": "1.5"}, ["'income'", "must be a float", "str '1.5'"]),
        ({**ROW, "income": True}, ["'income'", "must be a float", "bool"]),
        ({**ROW, "income": math.nan}, ["'income'", "finite", "nan"]),
        ({**ROW, "income": math.inf}, ["'income'", "finite", "inf"]),
        ({**ROW, "score": -math.inf}, ["'score'", "finite"]),
        ({**ROW, "age": 30.5}, ["'age'", "must be an int", "30.5"]),
        ({**ROW, "age": math.nan}, ["'age'", "must be an int"]),
        ({**ROW, "age": False}, ["'age'", "must be an int", "bool"]),
        ({**ROW, "age": 2**70}, ["'age'", "int64"]),
        ({**ROW, "city": 3}, ["'city'", "must be a str", "int 3"]),
        ({**ROW, "member": 1}, ["'member'", "must be a bool", "int 1"]),
        ({**ROW, "member": "true"}, ["'member'", "must be a bool"]),
    ],
)
def test_bad_rows_name_the_feature_and_problem(row: dict[str, Any], fragments: list[str]) -> None:
    message = problem(row)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (True, "bool_value"),
        (False, "bool_value"),
        (3, "int_value"),
        (-(2**63), "int_value"),
        (2.5, "float_value"),
        ("x", "string_value"),
        (np.int32(4), "int_value"),
        (np.float64(1.25), "float_value"),
        (np.bool_(True), "bool_value"),
    ],
)
def test_feature_values_on_the_wire(value: Any, field: str) -> None:
    message = features_to_proto({"f": value})["f"]
    assert message.WhichOneof("kind") == field
    back = features_from_proto({"f": message})["f"]
    assert back == value and type(back) is type(value.item() if hasattr(value, "item") else value)


def test_features_wire_edge_cases() -> None:
    assert features_to_proto({"a": None}) == {}
    assert features_from_proto({"a": events_pb2.FeatureValue()}) == {}
    with pytest.raises(InvalidInput, match="feature 'a' has unsupported value list"):
        features_to_proto({"a": [1]})
    with pytest.raises(InvalidInput, match="int64"):
        features_to_proto({"a": 2**64})
    event = events_pb2.LabeledExample(features=features_to_proto({"x": 1.0, "c": "a"}))
    decoded = events_pb2.LabeledExample.FromString(event.SerializeToString())
    assert features_from_proto(decoded.features) == {"x": 1.0, "c": "a"}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (True, "bool_label"),
        (False, "bool_label"),
        (0, "int_label"),
        (1, "int_label"),
        ("cat", "string_label"),
        (0.25, "value"),
        (-3.0, "value"),
    ],
)
def test_targets_round_trip_with_bool_before_int(value: Any, field: str) -> None:
    target = target_to_proto(value)
    assert target.WhichOneof("kind") == field
    back = target_from_proto(target)
    assert back == value and type(back) is type(value)


def test_target_edge_cases() -> None:
    assert target_from_proto(target_to_proto(np.bool_(False))) is False
    assert target_to_proto(np.int64(2)).int_label == 2
    with pytest.raises(InvalidInput, match="finite"):
        target_to_proto(math.nan)
    with pytest.raises(InvalidInput, match="unsupported"):
        target_to_proto(None)
    with pytest.raises(InvalidInput, match="no value"):
        target_from_proto(events_pb2.Target())
