"""The parameter rules of a spec: what each param of an allowed component accepts.

They are read off the constructor signatures of River's components (their
annotations, else their defaults), with a few overrides, and cached per component.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from river import base, optim, stats
from river.neighbors.base import BaseNN

from headwater.shared.specs.components import ALLOWED_COMPONENTS


@dataclass(frozen=True)
class ParamRule:
    """What one constructor param accepts from a spec.

    >>> param_rules("tree.HoeffdingTreeClassifier")["grace_period"].expected()
    'int'
    >>> param_rules("linear_model.LogisticRegression")["optimizer"].expected()
    'null or a Optimizer component'
    """

    scalars: frozenset[type] = frozenset()  # JSON scalar types accepted
    roles: tuple[type, ...] = ()  # a node value must build a subclass of one of these
    item: ParamRule | None = None  # set when lists are accepted: the rule of each item
    anything: bool = False  # unannotated and no telling default
    variadic: bool = False  # a *args param, given in the spec as a list
    pair: bool = False  # items are [feature, value] pairs (StatImputer)

    def expected(self) -> str:
        """The values this rule accepts, in words, for error messages."""
        names = {bool: "bool", int: "int", float: "float", str: "str", type(None): "null"}
        kinds = [names[t] for t in names if t in self.scalars]
        if float in self.scalars:
            kinds.remove("int")
        kinds += [f"a {role.__name__} component" for role in self.roles]
        kinds += ["a list"] if self.item else []
        return " or ".join(kinds) if kinds else "left unset (not configurable from a spec)"


ANY_VALUE = ParamRule(anything=True)
"""The rule of a param that says nothing about its values: any JSON value."""
_NUMBER = ParamRule(scalars=frozenset({int, float}))
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
_OVERRIDES: dict[tuple[str, str], ParamRule] = {
    ("linear_model.SoftmaxRegression", "l2"): _NUMBER,
    ("preprocessing.Normalizer", "order"): _NUMBER,
    ("compose.TransformerUnion", "transformers"): ParamRule(
        variadic=True, item=ParamRule(roles=(base.Transformer,))
    ),
    ("preprocessing.StatImputer", "imputers"): ParamRule(
        variadic=True,
        pair=True,
        item=ParamRule(
            scalars=frozenset({type(None), bool, int, float, str}),
            roles=(stats.base.Univariate,),
        ),
    ),
}


@functools.cache
def param_rules(name: str) -> Mapping[str, ParamRule]:
    """The rule of every param of the allowed component ``name``, read off its signature.

    Annotations give the JSON scalars and the component roles a param takes; an
    unannotated param is judged by its default; a few params are overridden where
    the signature says too little or too much. ``seed`` always takes an int or null.
    """
    rules: dict[str, ParamRule] = {}
    for param in inspect.signature(ALLOWED_COMPONENTS[name]).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            continue
        rule = _OVERRIDES.get((name, param.name)) or _rule_of(param)
        if param.name == "seed":  # whatever the annotation says
            rule = ParamRule(scalars=frozenset({int, type(None)}))
        rules[param.name] = rule
    return MappingProxyType(rules)


def _rule_of(param: inspect.Parameter) -> ParamRule:
    annotation = param.annotation
    if isinstance(annotation, str) and annotation:
        rule = _rule_of_annotation(annotation)
    elif param.default is param.empty or param.default is None:
        rule = ANY_VALUE
    elif isinstance(param.default, bool | int | float | str):
        rule = ParamRule(scalars=_SCALAR_TOKENS[type(param.default).__name__])
    else:
        rule = ParamRule()  # e.g. a type as default: not settable from a spec
    if param.kind is param.VAR_POSITIONAL:
        return ParamRule(variadic=True, item=rule)
    return rule


def _rule_of_annotation(annotation: str) -> ParamRule:
    scalars: set[type] = set()
    roles: list[type] = []
    item: ParamRule | None = None
    for token in _split_union(annotation):
        if token.startswith("list["):
            item = _rule_of_annotation(token[5:-1])
            continue
        if token == "list":  # River's bare lists are of feature names (nominal_attributes)
            item = ParamRule(scalars=frozenset({str}))
            continue
        last = token.rsplit(".", 1)[-1]
        if last in _SCALAR_TOKENS:
            scalars |= _SCALAR_TOKENS[last]
        elif last in _ROLES:
            roles.append(_ROLES[last])
    return ParamRule(scalars=frozenset(scalars), roles=tuple(roles), item=item)


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
