"""Encoding predictions as OIP v2 output tensors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headwater.services.gateway.outputs import (
    Prediction,
    encode_outputs,
    predict_datatype,
    select_outputs,
)
from headwater.shared.errors import FailedPrecondition, InvalidInput
from headwater.shared.pb import registry_pb2 as R


def raw_array(datatype: str, data: bytes) -> np.ndarray:
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(data):
            size = int.from_bytes(data[offset : offset + 4], "little")
            items.append(data[offset + 4 : offset + 4 + size])
            offset += 4 + size
        return np.array(items, dtype=object)
    return np.frombuffer(data, dtype={"BOOL": "?", "FP64": "<f8"}[datatype])


@pytest.mark.parametrize(
    ("task", "labels", "datatype", "expected"),
    [
        (R.TASK_BINARY, [True, False], "BOOL", [True, False]),
        (R.TASK_BINARY, [1, 0], "BOOL", [True, False]),
        (R.TASK_BINARY, [None, True], "BOOL", [False, True]),
        (R.TASK_BINARY, [None, None], "BOOL", [False, False]),
        (R.TASK_MULTICLASS, [3, 1], "BYTES", [b"3", b"1"]),
        (R.TASK_MULTICLASS, ["cat", "dog"], "BYTES", [b"cat", b"dog"]),
        (R.TASK_MULTICLASS, [None, "dog"], "BYTES", [b"", b"dog"]),
        (R.TASK_MULTICLASS, [None, None], "BYTES", [b"", b""]),
        (R.TASK_REGRESSION, [1.5, 2], "FP64", [1.5, 2.0]),
        (R.TASK_UNSPECIFIED, [1.5, 2], "FP64", [1.5, 2.0]),
    ],
)
def test_predict_datatype_is_fixed_by_the_task_whatever_the_batch(
    task, labels, datatype, expected
) -> None:
    predictions = [Prediction(label, {} if label is None else {label: 1.0}) for label in labels]
    assert predict_datatype(task) == datatype
    typed = encode_outputs(["predict"], predictions, raw=False, predict_type=datatype).tensors[0]
    assert (typed.datatype, list(typed.shape)) == (datatype, [2])
    field = {"BOOL": "bool_contents", "BYTES": "bytes_contents", "FP64": "fp64_contents"}
    assert list(getattr(typed.contents, field[datatype])) == expected
    raw = encode_outputs(["predict"], predictions, raw=True, predict_type=datatype)
    assert raw.tensors[0].datatype == datatype
    assert not raw.tensors[0].contents.ListFields()
    assert raw_array(datatype, raw.raw[0]).tolist() == expected


def test_a_binary_model_with_text_labels_is_a_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition, match=r"predicted the label 'yes'.*as multiclass"):
        encode_outputs(["predict"], [Prediction("yes", {"yes": 1.0})], False, "BOOL")


def test_regressor_predict_is_fp64() -> None:
    encoded = encode_outputs(["predict"], [Prediction(2), Prediction(None)], True, "FP64")
    assert encoded.tensors[0].datatype == "FP64"
    assert raw_array("FP64", encoded.raw[0]).tolist()[0] == 2.0
    assert np.isnan(raw_array("FP64", encoded.raw[0])[1])


def test_predict_proba_has_class_order_parameter() -> None:
    predictions = [Prediction("b", {"b": 0.7, "a": 0.3}), Prediction("c", {"c": 0.6, "a": 0.4})]
    encoded = encode_outputs(["predict", "predict_proba"], predictions, True, "BYTES")
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
