"""Encoding predictions as OIP v2 output tensors (pure, no I/O).

Every model has the output ``predict`` (shape ``[batch]``); classifiers also
have ``predict_proba`` (FP64, shape ``[batch, n_classes]``), whose column order
is given by the output parameter ``classes``, a JSON list.

The datatype of ``predict`` is fixed by the model's task, never by the batch
(so ``tritonclient``'s ``as_numpy("predict")`` keeps its dtype from call to
call, and ModelMetadata advertises exactly it), see :func:`predict_datatype`:

- regression: FP64; NaN where the model gives no value;
- binary: BOOL, the predicted label (River's binary classifiers predict
  True/False; labels 0 and 1 read as False and True). A row for which the
  model knows no class yet is False, and its ``predict_proba`` row is all
  zeros. A binary model that predicts any other label (e.g. text) cannot be
  answered in BOOL: FailedPrecondition says to register it as multiclass;
- multiclass: BYTES, the UTF-8 text of the label (``cat``, ``3``, ``True``);
  the empty string for a row with no class yet (``predict_proba`` all zeros).

Answers use ``raw_output_contents`` when the request used raw inputs (as
``tritonclient`` does) and typed ``contents`` otherwise.

>>> outputs = encode_outputs(
...     PREDICT_OUTPUTS_CLASSIFIER,
...     [Prediction(True, {False: 0.25, True: 0.75}), Prediction(False, {False: 0.9, True: 0.1})],
...     raw=False,
...     predict_type="BOOL",
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

from headwater.shared.errors import FailedPrecondition, InvalidInput
from headwater.shared.oip_datatypes import pack_raw, typed_contents
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


# The datatype of ``predict`` per registry task (registry_pb2.Task values; see the module doc).
_PREDICT_DATATYPES = {1: "BOOL", 2: "BYTES", 3: "FP64"}  # binary, multiclass, regression


def predict_datatype(task: int) -> str:
    """The datatype of ``predict`` for a model of this registry task (FP64 when unspecified).

    >>> from headwater.shared.pb import registry_pb2 as R
    >>> [predict_datatype(t) for t in (R.TASK_BINARY, R.TASK_MULTICLASS, R.TASK_REGRESSION)]
    ['BOOL', 'BYTES', 'FP64']
    """
    return _PREDICT_DATATYPES.get(task, "FP64")


def encode_outputs(
    names: Sequence[str], predictions: Sequence[Prediction], raw: bool, predict_type: str
) -> EncodedOutputs:
    """Encode the selected outputs of a batch of predictions.

    Args:
        names: Output names, as returned by :func:`select_outputs`.
        predictions: One per row, in row order.
        raw: Put the values in ``raw_output_contents`` instead of typed contents.
        predict_type: The datatype of ``predict``, from :func:`predict_datatype`.

    Returns:
        The tensors, and their raw bytes when ``raw``.

    Raises:
        FailedPrecondition: A label does not fit ``predict_type`` (text from a binary model).

    """
    encoded = EncodedOutputs(tensors=[])
    for name in names:
        if name == PREDICT:
            datatype, values = predict_type, _predict_values(predictions, predict_type)
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
            encoded.raw.append(pack_raw(datatype, values))
        else:
            typed_contents(tensor.contents, datatype).extend(values)
        encoded.tensors.append(tensor)
    return encoded


def _predict_values(predictions: Sequence[Prediction], datatype: str) -> list[Any]:
    """The values of ``predict`` in its datatype; rows without a label get the sentinel.

    >>> _predict_values([Prediction(True), Prediction(None, {}), Prediction(1)], "BOOL")
    [True, False, True]
    >>> _predict_values([Prediction("cat"), Prediction(None, {}), Prediction(3)], "BYTES")
    [b'cat', b'', b'3']
    >>> _predict_values([Prediction(1), Prediction(None)], "FP64")
    [1.0, nan]
    >>> _predict_values([Prediction("yes")], "BOOL")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    headwater.shared.errors.FailedPrecondition: a binary model answers predict in BOOL, but ...
    """
    if datatype == "FP64":
        return [float("nan") if p.label is None else float(p.label) for p in predictions]
    if datatype == "BOOL":
        return [False if p.label is None else _as_bool(p.label) for p in predictions]
    return [b"" if p.label is None else _text(p.label).encode("utf-8") for p in predictions]


def _as_bool(label: object) -> bool:
    if _kind(label) == "bool" or (_kind(label) == "int" and label in (0, 1)):
        return bool(label)
    raise FailedPrecondition(
        f"a binary model answers predict in BOOL, but this one predicted the label {label!r}; "
        "binary models learn bool (or 0/1) labels: register a model with text labels as "
        "multiclass"
    )


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
