"""Feature schemas, row validation, and feature/target values on the wire.

A model's schema is an ordered list of named, typed features; the order is the
column order of a dense input tensor. :meth:`FeatureSchema.validate_row` turns
what a caller sent into the row a River model sees, or raises InvalidInput
naming the feature and the problem.

>>> schema = FeatureSchema((
...     FeatureSpec("income", "float"),
...     FeatureSpec("age", "int"),
...     FeatureSpec("city", "str", required=False),
...     FeatureSpec("member", "bool", required=False),
... ))
>>> schema.names
('income', 'age', 'city', 'member')
>>> schema.validate_row({"age": 41, "income": 52000})
{'income': 52000.0, 'age': 41}
>>> try:
...     schema.validate_row({"income": float("nan"), "age": 41})
... except InvalidInput as exc:
...     print(exc)
feature 'income' must be a finite number, got nan
>>> try:
...     schema.validate_row({"income": 1.0, "age": True})
... except InvalidInput as exc:
...     print(exc)
feature 'age' must be an int, got bool True
>>> features_from_proto(features_to_proto({"age": 41, "member": True}))
{'age': 41, 'member': True}
>>> target_from_proto(target_to_proto(True)), target_from_proto(target_to_proto(1))
(True, 1)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, cast

import numpy as np

from headwater.shared import enums
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2, registry_pb2

FeatureTypeName: TypeAlias = Literal["float", "int", "str", "bool"]
FeatureValue: TypeAlias = float | int | str | bool
TargetValue: TypeAlias = bool | int | str | float

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_FROM_PROTO_TYPE = cast(Mapping[int, FeatureTypeName], enums.FEATURE_TYPES)
_TO_PROTO_TYPE = {name: value for value, name in _FROM_PROTO_TYPE.items()}


@dataclass(frozen=True)
class FeatureSpec:
    """One named, typed input of a model."""

    name: str
    type: FeatureTypeName
    required: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInput(f"feature names must be non-empty strings, got {self.name!r}")
        if self.type not in _TO_PROTO_TYPE:
            raise InvalidInput(
                f"feature {self.name!r} has type {self.type!r}; "
                f"expected one of {', '.join(_TO_PROTO_TYPE)}"
            )

    def coerce(self, value: object) -> FeatureValue:
        """The value as the model sees it; raises InvalidInput when it does not fit."""
        return _COERCE[self.type](self.name, value)


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered features of a model."""

    features: tuple[FeatureSpec, ...]
    _by_name: dict[str, FeatureSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        by_name: dict[str, FeatureSpec] = {}
        for feature in self.features:
            if feature.name in by_name:
                raise InvalidInput(f"feature {feature.name!r} appears twice in the schema")
            by_name[feature.name] = feature
        # Looked up for every key of every row: a dict, not a scan of the tuple.
        object.__setattr__(self, "_by_name", by_name)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in schema order."""
        return tuple(feature.name for feature in self.features)

    @property
    def required_names(self) -> tuple[str, ...]:
        """Names of the features every row must carry."""
        return tuple(feature.name for feature in self.features if feature.required)

    def __len__(self) -> int:
        return len(self.features)

    def get(self, name: str) -> FeatureSpec | None:
        """The feature called ``name``, if the schema has one."""
        return self._by_name.get(name)

    @classmethod
    def from_proto(cls, message: Any) -> FeatureSchema:
        """The schema of a ``registry_pb2.Model`` (or any message with ``features``)."""
        return cls.from_features(message.features)

    @classmethod
    def from_features(cls, features: Iterable[registry_pb2.Feature]) -> FeatureSchema:
        """A schema from ``registry_pb2.Feature`` messages, in order."""
        specs = []
        for feature in features:
            type_name = _FROM_PROTO_TYPE.get(feature.type)
            if type_name is None:
                raise InvalidInput(f"feature {feature.name!r} has no type (float, int, str, bool)")
            specs.append(FeatureSpec(feature.name, type_name, feature.required))
        return cls(tuple(specs))

    def to_proto(self) -> list[registry_pb2.Feature]:
        """The schema as ``registry_pb2.Feature`` messages, in order."""
        return [
            registry_pb2.Feature(
                name=feature.name,
                type=cast(registry_pb2.FeatureType.ValueType, _TO_PROTO_TYPE[feature.type]),
                required=feature.required,
            )
            for feature in self.features
        ]

    def validate_row(self, row: Mapping[str, object]) -> dict[str, FeatureValue]:
        """Check and coerce one row against the schema.

        Ints are accepted for float features (and become floats), integral
        floats for int features; bools only for bool features. A feature given
        as ``None`` counts as absent; absent optional features stay absent.

        Raises:
            InvalidInput: naming the feature that is unknown, missing, of the
                wrong type, or not finite.

        """
        unknown = [name for name in row if name not in self._by_name]
        if unknown:
            raise InvalidInput(
                f"unknown feature {', '.join(repr(name) for name in unknown)}; "
                f"the schema has {', '.join(self.names) or 'no features'}"
            )
        out: dict[str, FeatureValue] = {}
        for feature in self.features:
            value = row.get(feature.name)
            if value is None:
                if feature.required:
                    raise InvalidInput(f"required feature {feature.name!r} is missing")
                continue
            out[feature.name] = feature.coerce(value)
        return out


# --- coercion -------------------------------------------------------------------------


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _is_bool(value: object) -> bool:
    return isinstance(value, bool | np.bool_)


def _to_float(name: str, value: object) -> float:
    if type(value) is float and math.isfinite(value):  # the hot path: no ABC checks
        return value
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"feature {name!r} must be a float, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"feature {name!r} must be a finite number, got {number}")
    return number


def _to_int(name: str, value: object) -> int:
    if _is_bool(value):
        raise InvalidInput(f"feature {name!r} must be an int, got {_describe(value)}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        number = int(float(value))
    else:
        raise InvalidInput(f"feature {name!r} must be an int, got {_describe(value)}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise InvalidInput(f"feature {name!r} is out of the int64 range: {number}")
    return number


def _to_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"feature {name!r} must be a str, got {_describe(value)}")
    return value


def _to_bool(name: str, value: object) -> bool:
    if not _is_bool(value):
        raise InvalidInput(f"feature {name!r} must be a bool, got {_describe(value)}")
    return bool(value)


_COERCE: dict[str, Callable[[str, object], FeatureValue]] = {
    "float": _to_float,
    "int": _to_int,
    "str": _to_str,
    "bool": _to_bool,
}


# --- wire values ------------------------------------------------------------------------


def features_to_proto(row: Mapping[str, object]) -> dict[str, events_pb2.FeatureValue]:
    """Feature values as ``events_pb2.FeatureValue`` messages; ``None`` values are left out.

    Raises:
        InvalidInput: a value is not a bool, int, float or str.

    """
    out: dict[str, events_pb2.FeatureValue] = {}
    for name, value in row.items():
        if value is None:
            continue
        if _is_bool(value):
            out[name] = events_pb2.FeatureValue(bool_value=bool(value))
        elif isinstance(value, numbers.Integral):
            out[name] = events_pb2.FeatureValue(int_value=_to_int(name, value))
        elif isinstance(value, numbers.Real):
            out[name] = events_pb2.FeatureValue(float_value=float(value))
        elif isinstance(value, str):
            out[name] = events_pb2.FeatureValue(string_value=value)
        else:
            raise InvalidInput(f"feature {name!r} has unsupported value {_describe(value)}")
    return out


def features_from_proto(
    mapping: Mapping[str, events_pb2.FeatureValue],
) -> dict[str, FeatureValue]:
    """Plain values from ``FeatureValue`` messages; unset values are left out."""
    out: dict[str, FeatureValue] = {}
    for name, message in mapping.items():
        kind = message.WhichOneof("kind")
        if kind is not None:
            out[name] = getattr(message, kind)
    return out


def target_to_proto(value: object) -> events_pb2.Target:
    """A label or regression value as ``events_pb2.Target`` (bool checked before int).

    Raises:
        InvalidInput: the value is not a bool, int, str or finite float.

    """
    if _is_bool(value):
        return events_pb2.Target(bool_label=bool(value))
    if isinstance(value, numbers.Integral):
        return events_pb2.Target(int_label=_to_int("target", value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidInput(f"target must be a finite number, got {number}")
        return events_pb2.Target(value=number)
    if isinstance(value, str):
        return events_pb2.Target(string_label=value)
    raise InvalidInput(f"target has unsupported value {_describe(value)}")


def target_from_proto(target: events_pb2.Target) -> TargetValue:
    """The plain value of a ``Target``.

    Raises:
        InvalidInput: the target has no value set.

    """
    kind = target.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("target has no value (bool_label, int_label, string_label or value)")
    return cast(TargetValue, getattr(target, kind))
