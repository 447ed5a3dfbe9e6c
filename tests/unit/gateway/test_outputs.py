"""Encoding predictions as OIP v2 output tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headwater.services.gateway.outputs import (
    Prediction,
    encode_outputs,
    select_outputs,
)
from headwater.shared.errors import InvalidInput


def raw_array(datatype: str, data: bytes) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            size = int.from_bytes(data[offset : offset + 4], "little")
            items.append(data[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return np.array(items, dtype=object)
    return np.frombuffer(data, dtype={"BOOL": "?", "INT64": "<i8", "FP64": "<f8"}[datatype])


@pytest.mark.parametrize(
    ("labels", "datatype", "expected"),
    [
        ([True, False], "BOOL", [True, False]),
        ([3, 1], "INT64", [3, 1]),
        (["cat", "dog"], "BYTES", [b"cat", b"dog"]),
        ([1.0, 2.0], "FP64", [1.0, 2.0]),
        ([None, None], "BYTES", [b"", b""]),
    ],
)
def test_predict_datatype_follows_labels(labels, datatype, expected) -> None:
    predictions = [Prediction(label, {}) for label in labels]
    typed = encode_outputs(["predict"], predictions, raw=False).tensors[0]
    assert (typed.datatype, list(typed.shape)) == (datatype, [2])
    field = {
        "BOOL": "bool_contents",
        "INT64": "int64_contents",
        "BYTES": "bytes_contents",
        "FP64": "fp64_contents",
    }[datatype]
    assert list(getattr(typed.contents, field)) == expected
    raw = encode_outputs(["predict"], predictions, raw=True)
    assert raw.tensors[0].datatype == datatype
    assert not raw.tensors[0].contents.ListFields()
    assert raw_array(datatype, raw.raw[0]).tolist() == expected


def test_regressor_predict_is_fp64() -> None:
    encoded = encode_outputs(
        ["predict"], [Prediction(2), Prediction(0.5)], raw=True, classifier=False
    )
    assert encoded.tensors[0].datatype == "FP64"
    assert raw_array("FP64", encoded.raw[0]).tolist() == [2.0, 0.5]


def test_predict_proba_has_class_order_parameter() -> None:
    predictions = [Prediction("b", {"b": 0.7, "a": 0.3}), Prediction("c", {"c": 0.6, "a": 0.4})]
    encoded = encode_outputs(["predict", "predict_proba"], predictions, raw=True)
    proba = encoded.tensors[1]
    assert (proba.name, proba.datatype, list(proba.shape)) == ("predict_proba", "FP64", [2, 3])
    classes = json.loads(proba.parameters["classes"].string_param)
    assert classes == ["a", "b", "c"]
    matrix = raw_array("FP64", encoded.raw[1]).reshape(2, 3)
    assert matrix.tolist() == [[0.3, 0.7, 0.0], [0.4, 0.0, 0.6]]


def test_select_outputs() -> None:
    assert select_outputs([], classifier=False) == ("predict",)
    assert select_outputs(["predict", "predict"], classifier=True) == ("predict",)
    with pytest.raises(
        InvalidInput, match="unknown output 'score'; this model has: predict, predict_proba"
    ):
        select_outputs(["score"], classifier=True)
