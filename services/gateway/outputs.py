"""Encoding predictions as OIP v2 output tensors (pure, no I/O).

Every model has the output ``predict`` (shape ``[batch]``); classifiers also
have ``predict_proba`` (FP64, shape ``[batch, n_classes]``), whose column order
is given by the output parameter ``classes``, a JSON list.

The datatype of ``predict`` follows the task and the labels: FP64 for a
regressor; for a classifier BOOL, INT64, FP64 or BYTES (UTF-8 text) by the
type of the labels it predicts. A classifier that has not seen any label yet
predicts no class: its ``predict`` is BYTES with empty strings.

Answers use ``raw_output_contents`` when the request used raw inputs (as
``tritonclient`` does) and typed ``contents`` otherwise.

>>> outputs = encode_outputs(
...     PREDICT_OUTPUTS_CLASSIFIER,
...     [Prediction(True, {False: 0.25, True: 0.75}), Prediction(False, {False: 0.9, True: 0.1})],
...     raw=False,
... )
>>> [(o.name, o.datatype, list(o.shape)) for o in outputs.tensors]
[('predict', 'BOOL', [2]), ('predict_proba', 'FP64', [2, 2])]
>>> list(outputs.tensors[0].contents.bool_contents)
[True, False]
>>> outputs.tensors[1].parameters["classes"].string_param
'[false, true]'
>>> list(outputs.tensors[1].contents.fp64_contents)
[0.25, 0.75, 0.9, 0.1]
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from headwater.shared.errors import InvalidInput
from headwater.shared.pb import oip_pb2

Label: TypeAlias = bool | int | str | float
OutputTensor: TypeAlias = oip_pb2.ModelInferResponse.InferOutputTensor

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
PREDICT_OUTPUTS_CLASSIFIER: tuple[str, ...] = (PREDICT, PREDICT_PROBA)
PREDICT_OUTPUTS_REGRESSOR: tuple[str, ...] = (PREDICT,)


@dataclass(frozen=True)
class Prediction:
    """One row's prediction.

    Attributes:
        label: The predicted label or value; None when a classifier knows no class yet.
        proba: Class -> probability for classifiers, None for regressors.

    """

    label: Label | None
    proba: Mapping[Any, float] | None = None


@dataclass(frozen=True)
class EncodedOutputs:
    """Output tensors and, when answering raw, their bytes in the same order."""

    tensors: list[OutputTensor]
    raw: list[bytes] = field(default_factory=list)


def available_outputs(classifier: bool) -> tuple[str, ...]:
    """The outputs a model offers.

    >>> available_outputs(False)
    ('predict',)
    """
    return PREDICT_OUTPUTS_CLASSIFIER if classifier else PREDICT_OUTPUTS_REGRESSOR


def select_outputs(requested: Iterable[str], classifier: bool) -> tuple[str, ...]:
    """The outputs to answer: every one when none is requested, else those requested.

    >>> select_outputs([], classifier=True)
    ('predict', 'predict_proba')
    >>> select_outputs(["predict_proba"], classifier=True)
    ('predict_proba',)
    >>> select_outputs(["predict_proba"], classifier=False)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: unknown output 'predict_proba'; this model has: predict

    Raises:
        InvalidInput: A requested output does not exist for this model.

    """
    available = available_outputs(classifier)
    names = tuple(dict.fromkeys(requested))
    for name in names:
        if name not in available:
            raise InvalidInput(f"unknown output '{name}'; this model has: {', '.join(available)}")
    return names or available


def ordered_classes(predictions: Sequence[Prediction]) -> list[Any]:
    """Every class seen in the rows' probabilities, in a stable order.

    Classes of one type sort naturally (False before True, numbers ascending,
    text lexicographically); mixed types sort by type name first.

    >>> ordered_classes([Prediction("b", {"b": 0.6, "a": 0.4}), Prediction("c", {"c": 1.0})])
    ['a', 'b', 'c']
    """
    classes: dict[Any, None] = {}
    for prediction in predictions:
        classes.update(dict.fromkeys(prediction.proba or ()))
    return sorted(classes, key=lambda c: (type(c).__name__, c))


def encode_outputs(
    names: Sequence[str], predictions: Sequence[Prediction], raw: bool, classifier: bool = True
) -> EncodedOutputs:
    """Encode the selected outputs of a batch of predictions.

    Args:
        names: Output names, as returned by :func:`select_outputs`.
        predictions: One per row, in row order.
        raw: Put the values in ``raw_output_contents`` instead of typed contents.
        classifier: False for a regressor, whose ``predict`` is always FP64.

    Returns:
        The tensors, and their raw bytes when ``raw``.

    """
    encoded = EncodedOutputs(tensors=[])
    for name in names:
        if name == PREDICT:
            datatype, values = _labels(predictions) if classifier else _values(predictions)
            shape: tuple[int, ...] = (len(predictions),)
            parameters: dict[str, str] = {}
        else:
            classes = ordered_classes(predictions)
            datatype = "FP64"
            values = [(p.proba or {}).get(c, 0.0) for p in predictions for c in classes]
            shape = (len(predictions), len(classes))
            parameters = {"classes": json.dumps([_jsonable(c) for c in classes])}
        tensor = OutputTensor(name=name, datatype=datatype, shape=shape)
        for key, text in parameters.items():
            tensor.parameters[key].string_param = text
        if raw:
            encoded.raw.append(_raw(datatype, values))
        else:
            _fill(tensor.contents, datatype, values)
        encoded.tensors.append(tensor)
    return encoded


def _labels(predictions: Sequence[Prediction]) -> tuple[str, list[Any]]:
    """The datatype of ``predict`` and its values.

    >>> _labels([Prediction(1), Prediction(2)])
    ('INT64', [1, 2])
    >>> _labels([Prediction(None, {}), Prediction(None, {})])
    ('BYTES', [b'', b''])
    >>> _labels([Prediction(1.5)])
    ('FP64', [1.5])
    """
    labels = [p.label for p in predictions]
    kinds = {_kind(label) for label in labels if label is not None}
    if None not in labels and kinds == {"bool"}:
        return "BOOL", [bool(v) for v in labels]
    if None not in labels and kinds == {"int"}:
        return "INT64", [int(v) for v in labels]  # type: ignore[arg-type]
    if None not in labels and kinds and kinds <= {"int", "float"}:
        return "FP64", [float(v) for v in labels]  # type: ignore[arg-type]
    return "BYTES", [b"" if v is None else _text(v).encode("utf-8") for v in labels]


def _values(predictions: Sequence[Prediction]) -> tuple[str, list[Any]]:
    """A regressor's ``predict``: FP64, NaN where it gave nothing.

    >>> _values([Prediction(1), Prediction(None)])
    ('FP64', [1.0, nan])
    """
    return "FP64", [float("nan") if p.label is None else float(p.label) for p in predictions]


def _kind(label: object) -> str:
    if isinstance(label, bool | np.bool_):
        return "bool"
    if isinstance(label, int | np.integer):
        return "int"
    if isinstance(label, float | np.floating):
        return "float"
    return "text"


def _text(label: object) -> str:
    return label if isinstance(label, str) else str(label)


def _jsonable(label: object) -> object:
    kind = _kind(label)
    if kind == "bool":
        return bool(label)  # type: ignore[arg-type]
    if kind == "int":
        return int(label)  # type: ignore[call-overload]
    if kind == "float":
        return float(label)  # type: ignore[arg-type]
    return _text(label)


_RAW_DTYPES = {"BOOL": "?", "INT64": "<i8", "FP64": "<f8"}
_FIELDS = {
    "BOOL": "bool_contents",
    "INT64": "int64_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _raw(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(len(v).to_bytes(4, "little") + v for v in values)
    return np.asarray(values, dtype=_RAW_DTYPES[datatype]).tobytes()


def _fill(contents: oip_pb2.InferTensorContents, datatype: str, values: list[Any]) -> None:
    getattr(contents, _FIELDS[datatype]).extend(values)
