"""Declarative River pipeline specs, resolved against an allow-list.

A spec is JSON: one component node, or a pipeline of nodes. A param whose value
is a node (or a list of nodes) is resolved the same way, so optimizers, losses,
drift detectors and the base models of ensembles are specs too. Component
names are looked up in :data:`ALLOWED_COMPONENTS`; nothing named in a spec is
ever imported, and params are checked against the constructor's signature
before anything is built.

>>> spec = parse_spec('''{"pipeline": [
...     {"component": "preprocessing.StandardScaler"},
...     {"component": "linear_model.LogisticRegression",
...      "params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.05}}}}]}''')
>>> spec.to_json()  # doctest: +NORMALIZE_WHITESPACE
'{"pipeline":[{"component":"preprocessing.StandardScaler"},{"component":"linear_model.LogisticRegression","params":{"optimizer":{"component":"optim.SGD","params":{"lr":0.05}}}}]}'
>>> spec.kind
'classifier'
>>> model = build_model(spec, seed=42)
>>> type(model).__name__, list(model.steps)
('Pipeline', ['StandardScaler', 'LogisticRegression'])

Errors name the problem:

>>> try:
...     parse_spec('{"component": "os.system"}')
... except InvalidInput as exc:
...     message = str(exc)
>>> message.split(";")[0]
"unknown component 'os.system' at spec"
>>> "linear_model.LogisticRegression" in message
True
>>> try:
...     parse_spec('{"component": "tree.HoeffdingTreeClassifier", "params": {"grace_period": "x"}}')
... except InvalidInput as exc:
...     print(exc)
tree.HoeffdingTreeClassifier: param 'grace_period' at spec.params.grace_period must be int, got 'x'
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, NoReturn, TypeAlias

from river import (
    base,
    compose,
    drift,
    ensemble,
    feature_extraction,
    forest,
    linear_model,
    multiclass,
    naive_bayes,
    neighbors,
    optim,
    preprocessing,
    stats,
    tree,
)
from river.neighbors.base import BaseNN

from headwater.shared.errors import InvalidInput

MAX_SPEC_BYTES = 64 * 1024
MAX_DEPTH = 12


class StatImputer(preprocessing.StatImputer):
    """River's ``StatImputer`` that also fills features absent from a row.

    A row leaves out an optional feature the caller did not send (see
    :meth:`headwater.shared.features.FeatureSchema.validate_row`); River's own
    imputer only fills ``None`` values and raises KeyError on absent ones.
    """

    def learn_one(self, x: dict[Any, Any]) -> None:
        """Update each feature's statistic with the row's value, when it has one."""
        for name, stat in self.stats.items():
            if x.get(name) is not None:
                stat.update(x[name])

    def transform_one(self, x: dict[Any, Any]) -> dict[Any, Any]:
        """The row with every absent or ``None`` imputed feature filled in."""
        x = dict(x)
        for name, stat in self.stats.items():
            if x.get(name) is None:
                x[name] = stat.get()
        return x


class Select(compose.Select):
    """River's ``compose.Select`` that skips selected features absent from a row.

    It also keeps the row's order rather than the order of a set of strings,
    which changes with ``PYTHONHASHSEED`` from one process to the next.
    """

    def transform_one(self, x: dict[Any, Any]) -> dict[Any, Any]:
        """The selected features the row has, in the row's order (not the set's)."""
        return {name: value for name, value in x.items() if name in self.keys}


HEADWATER_COMPONENTS: tuple[type, ...] = (StatImputer, Select)
"""headwater's drop-in replacements of River components, resolved in their place."""
_REPLACEMENTS: dict[str, type] = {
    "compose.Select": Select,
    "preprocessing.StatImputer": StatImputer,
}

# module path -> (module, allowed class names). Only these are ever resolved.
_ALLOWED: dict[str, tuple[Any, str]] = {
    "compose": (compose, "Discard Select TransformerUnion"),
    "drift": (drift, "ADWIN KSWIN PageHinkley"),
    "ensemble": (
        ensemble,
        "ADWINBaggingClassifier AdaBoostClassifier BaggingClassifier BaggingRegressor "
        "LeveragingBaggingClassifier SRPClassifier SRPRegressor",
    ),
    "feature_extraction": (feature_extraction, "PolynomialExtender"),
    "forest": (forest, "AMFClassifier AMFRegressor ARFClassifier ARFRegressor"),
    "linear_model": (
        linear_model,
        "ALMAClassifier LinearRegression LogisticRegression PAClassifier PARegressor "
        "Perceptron SoftmaxRegression",
    ),
    "multiclass": (multiclass, "OneVsRestClassifier"),
    "naive_bayes": (naive_bayes, "BernoulliNB ComplementNB GaussianNB MultinomialNB"),
    "neighbors": (neighbors, "KNNClassifier KNNRegressor LazySearch"),
    "optim": (optim, "AdaDelta AdaGrad AdaMax Adam FTRLProximal Momentum Nadam RMSProp SGD"),
    "optim.initializers": (optim.initializers, "Constant Normal Zeros"),
    "optim.losses": (optim.losses, "Absolute Cauchy CrossEntropy Hinge Huber Log Squared"),
    "preprocessing": (
        preprocessing,
        "AdaptiveStandardScaler FeatureHasher MaxAbsScaler MinMaxScaler Normalizer "
        "OneHotEncoder PreviousImputer RobustScaler StandardScaler StatImputer",
    ),
    "stats": (stats, "Max Mean Min Mode Quantile"),
    "tree": (
        tree,
        "ExtremelyFastDecisionTreeClassifier HoeffdingAdaptiveTreeClassifier "
        "HoeffdingAdaptiveTreeRegressor HoeffdingTreeClassifier HoeffdingTreeRegressor",
    ),
}

ALLOWED_COMPONENTS: Mapping[str, type] = MappingProxyType(
    {
        f"{path}.{name}": _REPLACEMENTS.get(f"{path}.{name}") or getattr(module, name)
        for path, (module, names) in sorted(_ALLOWED.items())
        for name in sorted(names.split())
    }
)
"""Every component a spec may name, by its River path (``module.Class``)."""

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


# --- parsing -----------------------------------------------------------------


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
    rules = _rules(name)
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


# --- params: rules read off constructor signatures ------------------------------


@dataclass(frozen=True)
class _Rule:
    scalars: frozenset[type] = frozenset()  # JSON scalar types accepted
    roles: tuple[type, ...] = ()  # a node value must build a subclass of one of these
    item: _Rule | None = None  # set when lists are accepted: the rule of each item
    anything: bool = False  # unannotated and no telling default
    variadic: bool = False  # a *args param, given in the spec as a list
    pair: bool = False  # items are [feature, value] pairs (StatImputer)


@dataclass(frozen=True)
class _Where:
    component: str
    param: str
    path: str


_ANY = _Rule(anything=True)
_NUMBER = _Rule(scalars=frozenset({int, float}))
_ROLES: dict[str, type] = {
    "BaseNN": BaseNN,
    "BinaryLoss": optim.losses.BinaryLoss,
    "Classifier": base.Classifier,
    "DriftDetector": base.DriftDetector,
    "Estimator": base.Estimator,
    "Initializer": optim.base.Initializer,
    "MultiClassLoss": optim.losses.MultiClassLoss,
    "Optimizer": optim.base.Optimizer,
    "Regressor": base.Regressor,
    "RegressionLoss": optim.losses.RegressionLoss,
    "Scheduler": optim.base.Scheduler,
    "Transformer": base.Transformer,
    "Univariate": stats.base.Univariate,
}
_SCALAR_TOKENS: dict[str, frozenset[type]] = {
    "None": frozenset({type(None)}),
    "bool": frozenset({bool}),
    "int": frozenset({int}),
    "float": frozenset({int, float}),
    "str": frozenset({str}),
    "FeatureName": frozenset({str}),
}
# Params whose signature says too little or too much.
_OVERRIDES: dict[tuple[str, str], _Rule] = {
    ("linear_model.SoftmaxRegression", "l2"): _NUMBER,
    ("preprocessing.Normalizer", "order"): _NUMBER,
    ("compose.TransformerUnion", "transformers"): _Rule(
        variadic=True, item=_Rule(roles=(base.Transformer,))
    ),
    ("preprocessing.StatImputer", "imputers"): _Rule(
        variadic=True,
        pair=True,
        item=_Rule(
            scalars=frozenset({type(None), bool, int, float, str}),
            roles=(stats.base.Univariate,),
        ),
    ),
}


@functools.cache
def _rules(name: str) -> dict[str, _Rule]:
    rules: dict[str, _Rule] = {}
    for param in inspect.signature(ALLOWED_COMPONENTS[name]).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            continue
        rule = _OVERRIDES.get((name, param.name)) or _rule_of(param)
        if param.name == "seed":  # whatever the annotation says
            rule = _Rule(scalars=frozenset({int, type(None)}))
        rules[param.name] = rule
    return rules


def _rule_of(param: inspect.Parameter) -> _Rule:
    annotation = param.annotation
    if isinstance(annotation, str) and annotation:
        rule = _rule_of_annotation(annotation)
    elif param.default is param.empty or param.default is None:
        rule = _ANY
    elif isinstance(param.default, bool | int | float | str):
        rule = _Rule(scalars=_SCALAR_TOKENS[type(param.default).__name__])
    else:
        rule = _Rule()  # e.g. a type as default: not settable from a spec
    if param.kind is param.VAR_POSITIONAL:
        return _Rule(variadic=True, item=rule)
    return rule


def _rule_of_annotation(annotation: str) -> _Rule:
    scalars: set[type] = set()
    roles: list[type] = []
    item: _Rule | None = None
    for token in _split_union(annotation):
        if token.startswith("list["):
            item = _rule_of_annotation(token[5:-1])
            continue
        if token == "list":  # River's bare lists are of feature names (nominal_attributes)
            item = _Rule(scalars=frozenset({str}))
            continue
        last = token.rsplit(".", 1)[-1]
        if last in _SCALAR_TOKENS:
            scalars |= _SCALAR_TOKENS[last]
        elif last in _ROLES:
            roles.append(_ROLES[last])
    return _Rule(scalars=frozenset(scalars), roles=tuple(roles), item=item)


def _split_union(annotation: str) -> list[str]:
    tokens, depth, current = [], 0, ""
    for char in annotation:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            tokens.append(current.strip())
            current = ""
        else:
            current += char
    return [*tokens, current.strip()]


def _check(rule: _Rule, value: object, where: _Where, depth: int) -> ParamValue:
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
        return _check_list(_Rule(item=rule.item or _ANY), value, where, depth)
    if isinstance(value, float) and not math.isfinite(value):
        _fail(where, "must be finite", value)
    if rule.anything or type(value) in rule.scalars:
        return value  # type: ignore[return-value]
    _fail(where, f"must be {_expected(rule)}", value)


def _check_list(rule: _Rule, value: object, where: _Where, depth: int) -> tuple[ParamValue, ...]:
    if not isinstance(value, list):
        _fail(where, "must be a list", value)
    item = rule.item or _ANY
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


def _expected(rule: _Rule) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}
    kinds = [names[t] for t in names if t in rule.scalars]
    if float in rule.scalars:
        kinds.remove("int")
    kinds += [f"a {role.__name__} component" for role in rule.roles]
    kinds += ["a list"] if rule.item else []
    return " or ".join(kinds) if kinds else "left unset (not configurable from a spec)"


def _fail(where: _Where, problem: str, value: object) -> NoReturn:
    raise InvalidInput(
        f"{where.component}: param {where.param!r} at {where.path} {problem}, got {value!r}"
    )


# --- nodes ----------------------------------------------------------------------


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


# --- building -------------------------------------------------------------------


def build_model(spec: ModelSpec | str, seed: int | None = None) -> Any:
    """Build a fresh River estimator from a spec.

    Args:
        spec: A parsed spec, or its JSON.
        seed: When set, every component that takes a ``seed`` and was not given
            one gets a seed derived from this one and the component's place in
            the spec, so two builds with the same seed behave identically.

    Raises:
        InvalidInput: the spec is invalid or a component rejects its params.

    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    return _build(spec.root, "spec", seed)


def derive_seed(seed: int, path: str) -> int:
    """A 32-bit seed for the component at ``path``, distinct per path.

    >>> derive_seed(42, "spec") == derive_seed(42, "spec") != derive_seed(42, "spec.pipeline[1]")
    True
    """
    digest = hashlib.blake2b(f"{seed}/{path}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def _build(node: Node, path: str, seed: int | None) -> Any:
    if isinstance(node, PipelineNode):
        steps = [_build(step, f"{path}.pipeline[{i}]", seed) for i, step in enumerate(node.steps)]
        return compose.Pipeline(*steps)
    cls = ALLOWED_COMPONENTS[node.component]
    rules = _rules(node.component)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for key, value in node.params:
        built = _build_value(value, f"{path}.params.{key}", seed)
        if rules[key].variadic:
            args = [tuple(item) for item in built] if rules[key].pair else built
        else:
            kwargs[key] = built
    if seed is not None and "seed" in rules and "seed" not in kwargs:
        kwargs["seed"] = derive_seed(seed, path)
    try:
        return cls(*args, **kwargs)
    except Exception as exc:
        raise InvalidInput(f"{node.component} at {path} rejected its params: {exc}") from exc


def _build_value(value: ParamValue, path: str, seed: int | None) -> Any:
    if isinstance(value, ComponentNode | PipelineNode):
        return _build(value, path, seed)
    if isinstance(value, tuple):
        return [_build_value(item, f"{path}[{i}]", seed) for i, item in enumerate(value)]
    return value


# --- what a built model can do ------------------------------------------------------


def final_estimator(model: Any) -> Any:
    """The last step of a pipeline (the model itself when it is not one)."""
    while isinstance(model, compose.Pipeline):
        model = model.steps[list(model.steps)[-1]]
    return model


def supports_task(model: Any, task: Literal["binary", "multiclass", "regression"]) -> bool:
    """Whether a built model can serve a registry task.

    >>> supports_task(build_model('{"component": "linear_model.LogisticRegression"}'), "binary")
    True
    >>> supports_task(build_model('{"component": "linear_model.LogisticRegression"}'), "multiclass")
    False
    """
    last = final_estimator(model)
    if task == "regression":
        return isinstance(last, base.Regressor)
    if not isinstance(last, base.Classifier):
        return False
    return task == "binary" or bool(last._multiclass)
