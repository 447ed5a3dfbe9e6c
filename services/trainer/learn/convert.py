"""Protobuf ⇄ the learners' values: examples, learner kinds, lineage ranges.

>>> example = events_pb2.LabeledExample(example_id="p-1", model="churn")
>>> example.features["age"].int_value = 41
>>> example.label.bool_label = True
>>> example.labelled_at.seconds = 1_700_000_000
>>> example_from_proto(example, "classifier")
Example(example_id='p-1', features={'age': 41}, label=True, labelled_at=1700000000.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from headwater.services.trainer.learn.learner import Example, LearnerKind, OffsetSpan
from headwater.services.trainer.timestamps import seconds
from headwater.shared.errors import InvalidInput
from headwater.shared.features import FeatureSchema, features_from_proto, target_from_proto
from headwater.shared.pb import events_pb2, registry_pb2

_KINDS: dict[int, LearnerKind] = {
    registry_pb2.TASK_BINARY: "classifier",
    registry_pb2.TASK_MULTICLASS: "classifier",
    registry_pb2.TASK_REGRESSION: "regressor",
}


def learner_kind(task: int) -> LearnerKind:
    """Classifier or regressor, from a registry Task.

    >>> learner_kind(registry_pb2.TASK_REGRESSION)
    'regressor'
    """
    try:
        return _KINDS[task]
    except KeyError:
        raise InvalidInput(f"model task {task} is neither classification nor regression") from None


def example_from_proto(
    message: events_pb2.LabeledExample, kind: LearnerKind, schema: FeatureSchema | None = None
) -> Example:
    """The learner's view of a LabeledExample, checked against the model's schema.

    Raises:
        InvalidInput: No example id, no label, a label that does not fit the task,
            or features that do not fit the schema.

    >>> bad = events_pb2.LabeledExample(example_id="e", model="m")
    >>> bad.label.value = 0.5
    >>> example_from_proto(bad, "classifier")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: example 'e': a classifier's label must be ..., got 0.5

    """
    if not message.example_id:
        raise InvalidInput(f"LabeledExample of model {message.model!r} has no example_id")
    label = target_from_proto(message.label)
    _check_label(message.example_id, kind, label)
    features = features_from_proto(message.features)
    if schema is not None:
        features = schema.validate_row(features)
    return Example(message.example_id, features, label, seconds(message.labelled_at))


def _check_label(example_id: str, kind: LearnerKind, label: object) -> None:
    if kind == "classifier" and isinstance(label, float):
        raise InvalidInput(
            f"example {example_id!r}: a classifier's label must be a bool, int or str, got {label}"
        )
    if kind == "regressor" and (isinstance(label, bool | str) or not math.isfinite(float(label))):  # type: ignore[arg-type]
        raise InvalidInput(f"example {example_id!r}: a regressor's label must be a number")


def offset_ranges(spans: Iterable[OffsetSpan]) -> list[registry_pb2.OffsetRange]:
    """Lineage offset ranges (inclusive) from the learner's spans."""
    return [
        registry_pb2.OffsetRange(
            topic=s.topic, partition=s.partition, first_offset=s.first, last_offset=s.last
        )
        for s in spans
    ]


def spans_from_ranges(ranges: Iterable[registry_pb2.OffsetRange]) -> tuple[OffsetSpan, ...]:
    """The learner's spans from lineage offset ranges."""
    return tuple(OffsetSpan(r.topic, r.partition, r.first_offset, r.last_offset) for r in ranges)
