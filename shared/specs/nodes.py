"""The spec tree: its nodes, parsed from JSON against the allow-list and the param rules.

A spec is JSON: one component node, or a pipeline of nodes. A param whose value
is a node (or a list of nodes) is parsed the same way, so optimizers, losses,
drift detectors and the base models of ensembles are specs too. Parsing builds
nothing: :mod:`headwater.shared.specs.building` does, from a parsed spec.

>>> spec = parse_spec('{"component": "linear_model.LinearRegression", "params": {"l2": 0.1}}')
>>> spec.root
ComponentNode(component='linear_model.LinearRegression', params=(('l2', 0.1),))
>>> spec.kind, spec.to_json()
('regressor', '{"component":"linear_model.LinearRegression","params":{"l2":0.1}}')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeAlias

from river import base

from headwater.shared.errors import InvalidInput
from headwater.shared.specs.components import ALLOWED_COMPONENTS
from headwater.shared.specs.params import ANY_VALUE, ParamRule, param_rules

MAX_SPEC_BYTES = 64 * 1024
MAX_DEPTH = 12


Scalar: TypeAlias = bool | int | float | str | None
ParamValue: TypeAlias = "Scalar | tuple[ParamValue, ...] | ComponentNode | PipelineNode"


@dataclass(frozen=True)
class ComponentNode:
    """One allowed River component and its params (sorted by name; lists as tuples)."""

    component: str
    params: tuple[tuple[str, ParamValue], ...] = ()


@dataclass(frozen=True)
class PipelineNode:
    """Steps chained with ``compose.Pipeline``: transformers, then any estimator last."""

    steps: tuple[Node, ...]


Node: TypeAlias = ComponentNode | PipelineNode


@dataclass(frozen=True)
class ModelSpec:
    """A parsed, validated spec; build it with :func:`build_model`."""

    root: Node

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON data."""
        return _node_to_dict(self.root)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, empty params left out."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def kind(self) -> Literal["classifier", "regressor"]:
        """Whether the spec builds a classifier or a regressor."""
        if issubclass(_output_class(self.root), base.Classifier):
            return "classifier"
        return "regressor"


# --- parsing ---------------------------------------------------------------------


def parse_spec(spec_json: str) -> ModelSpec:
    """Parse and validate a spec; raises InvalidInput naming what is wrong."""
    if len(spec_json.encode()) > MAX_SPEC_BYTES:
        raise InvalidInput(f"spec is larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = json.loads(spec_json, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"spec is not valid JSON: {exc}") from exc
    return spec_from_dict(data)


def spec_from_dict(data: object) -> ModelSpec:
    """Validate spec data already decoded from JSON."""
    root = _parse_node(data, "spec", 0)
    out = _output_class(root)
    if not issubclass(out, (base.Classifier, base.Regressor)):
        raise InvalidInput(
            f"a spec must build a classifier or a regressor; {_describe(root)} is neither"
        )
    return ModelSpec(root)


def _reject_constant(name: str) -> float:
    raise InvalidInput(f"spec contains {name}, which is not a valid JSON number")


def _parse_node(data: object, path: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"spec is nested deeper than {MAX_DEPTH} levels at {path}")
    if not isinstance(data, dict):
        raise InvalidInput(f"expected a spec node (an object) at {path}, got {data!r}")
    if "pipeline" in data:
        return _parse_pipeline(data, path, depth)
    unknown = sorted(set(data) - {"component", "params"})
    if unknown or "component" not in data:
        raise InvalidInput(
            f"bad spec node at {path}: unknown keys {unknown}; a node is "
            '{"component": ..., "params": {...}} or {"pipeline": [...]}'
        )
    name = data["component"]
    if not isinstance(name, str) or name not in ALLOWED_COMPONENTS:
        raise InvalidInput(
            f"unknown component {name!r} at {path}; allowed components: "
            + ", ".join(ALLOWED_COMPONENTS)
        )
    params = {} if data.get("params") is None else data["params"]
    if not isinstance(params, dict):
        raise InvalidInput(f"{name}: params at {path}.params must be an object")
    rules = param_rules(name)
    parsed: list[tuple[str, ParamValue]] = []
    for key in sorted(params):
        if key not in rules:
            raise InvalidInput(
                f"{name}: unknown param {key!r} at {path}; accepted: {', '.join(rules) or 'none'}"
            )
        where = f"{path}.params.{key}"
        parsed.append((key, _check(rules[key], params[key], _Where(name, key, where), depth)))
    return ComponentNode(name, tuple(parsed))


def _parse_pipeline(data: dict[str, Any], path: str, depth: int) -> PipelineNode:
    if set(data) != {"pipeline"}:
        extra = sorted(set(data) - {"pipeline"})
        raise InvalidInput(f"bad pipeline at {path}: unknown keys {extra}")
    steps_data = data["pipeline"]
    if not isinstance(steps_data, list) or not steps_data:
        raise InvalidInput(f"pipeline at {path} must be a non-empty list of nodes")
    steps = tuple(
        _parse_node(step, f"{path}.pipeline[{i}]", depth + 1) for i, step in enumerate(steps_data)
    )
    for i, step in enumerate(steps[:-1]):
        if not issubclass(_output_class(step), base.Transformer):
            raise InvalidInput(
                f"pipeline step {path}.pipeline[{i}] ({_describe(step)}) is not a transformer; "
                "only the last step may be a predictor"
            )
    return PipelineNode(steps)


@dataclass(frozen=True)
class _Where:
    component: str
    param: str
    path: str


def _check(rule: ParamRule, value: object, where: _Where, depth: int) -> ParamValue:
    if depth > MAX_DEPTH:
        raise InvalidInput(f"spec is nested deeper than {MAX_DEPTH} levels at {where.path}")
    if rule.variadic or rule.pair:
        return _check_list(rule, value, where, depth)
    if isinstance(value, dict):
        if not (rule.roles or rule.anything):
            _fail(where, "does not take a component", value)
        node = _parse_node(value, where.path, depth + 1)
        if rule.roles and not issubclass(_output_class(node), rule.roles):
            expected = " or ".join(role.__name__ for role in rule.roles)
            article = "an" if expected[0] in "AEIOU" else "a"
            _fail(where, f"must be {article} {expected} component", _describe(node))
        return node
    if isinstance(value, list):
        if rule.item is None and not rule.anything:
            _fail(where, "does not take a list", value)
        return _check_list(ParamRule(item=rule.item or ANY_VALUE), value, where, depth)
    if isinstance(value, float) and not math.isfinite(value):
        _fail(where, "must be finite", value)
    if rule.anything or type(value) in rule.scalars:
        return value  # type: ignore[return-value]
    _fail(where, f"must be {rule.expected()}", value)


def _check_list(
    rule: ParamRule, value: object, where: _Where, depth: int
) -> tuple[ParamValue, ...]:
    if not isinstance(value, list):
        _fail(where, "must be a list", value)
    item = rule.item or ANY_VALUE
    checked: list[ParamValue] = []
    for i, element in enumerate(value):
        at = _Where(where.component, where.param, f"{where.path}[{i}]")
        if rule.pair:
            if not (
                isinstance(element, list) and len(element) == 2 and isinstance(element[0], str)
            ):
                _fail(at, "must be a [feature name, statistic or constant] pair", element)
            checked.append((element[0], _check(item, element[1], at, depth + 1)))
        else:
            checked.append(_check(item, element, at, depth + 1))
    return tuple(checked)


def _fail(where: _Where, problem: str, value: object) -> NoReturn:
    raise InvalidInput(
        f"{where.component}: param {where.param!r} at {where.path} {problem}, got {value!r}"
    )


# --- nodes -----------------------------------------------------------------------


def _output_class(node: Node) -> type:
    if isinstance(node, PipelineNode):
        return _output_class(node.steps[-1])
    return ALLOWED_COMPONENTS[node.component]


def _describe(node: Node) -> str:
    if isinstance(node, PipelineNode):
        return "pipeline ending in " + _describe(node.steps[-1])
    return node.component


def _node_to_dict(node: Node) -> dict[str, Any]:
    if isinstance(node, PipelineNode):
        return {"pipeline": [_node_to_dict(step) for step in node.steps]}
    out: dict[str, Any] = {"component": node.component}
    if node.params:
        out["params"] = {key: _value_to_json(value) for key, value in node.params}
    return out


def _value_to_json(value: ParamValue) -> Any:
    if isinstance(value, ComponentNode | PipelineNode):
        return _node_to_dict(value)
    if isinstance(value, tuple):
        return [_value_to_json(item) for item in value]
    return value
