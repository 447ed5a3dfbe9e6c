"""Schema compatibility of a candidate version with the deployed one (pure, no I/O).

Every version of a model is served against the model's one feature schema: the
gateway validates each request against it, whichever version answers. So no
version brings a schema of its own, and "compatible with the deployed version"
cannot mean "accepts the same inputs" — they all do. What can differ is what a
version's spec does with those inputs and what it answers. A candidate is
*schema-compatible* with the deployed version when

1. every feature its spec names is declared in the model's schema: the keys of
   ``compose.Select`` and ``compose.Discard``, the features of
   ``preprocessing.StatImputer``, the ``nominal_attributes`` of trees and
   forests. A spec naming an undeclared feature never sees it (``Select``
   skips absent features, the imputer fills a constant in), so it would learn
   and answer on less than its spec says; and
2. it predicts the same kind of output as the deployed version (a classifier's
   labels or a regressor's numbers), so answers keep their shape when traffic
   moves.

>>> from headwater.shared.specs import parse_spec
>>> features = ("age", "plan")
>>> select = '{"pipeline": [{"component": "compose.Select", "params": {"keys": ["age", "zip"]}},'
>>> candidate = parse_spec(select + ' {"component": "linear_model.LogisticRegression"}]}')
>>> baseline = parse_spec('{"component": "tree.HoeffdingTreeClassifier"}')
>>> features_named(candidate)
('age', 'zip')
>>> schema_problems(features, candidate, baseline, 1)
("names a feature the model's schema does not declare: 'zip'",)
>>> regressor = parse_spec('{"component": "linear_model.LinearRegression"}')
>>> schema_problems(features, regressor, baseline, 1)
("predicts a regressor's output where version 1 predicts a classifier's",)
>>> schema_problems(features, baseline, baseline, 1)
()
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from headwater.shared.specs import ComponentNode, ModelSpec, Node, ParamValue, PipelineNode

#: The params whose values are feature names (``imputers``: [feature, statistic] pairs).
FEATURE_PARAMS = frozenset({"keys", "imputers", "nominal_attributes"})


def features_named(spec: ModelSpec) -> tuple[str, ...]:
    """Every feature name the spec names, once each, in the order they appear.

    >>> from headwater.shared.specs import parse_spec
    >>> spec = parse_spec('''{"pipeline": [
    ...     {"component": "preprocessing.StatImputer", "params": {"imputers": [["plan", "free"]]}},
    ...     {"component": "tree.HoeffdingTreeClassifier",
    ...      "params": {"nominal_attributes": ["plan", "region"]}}]}''')
    >>> features_named(spec)
    ('plan', 'region')
    """
    return tuple(dict.fromkeys(_names_in(spec.root)))


def _names_in(node: Node) -> Iterator[str]:
    if isinstance(node, PipelineNode):
        for step in node.steps:
            yield from _names_in(step)
        return
    for key, value in node.params:
        if key in FEATURE_PARAMS:
            yield from _feature_values(value)
        else:
            yield from _nested_names(value)


def _feature_values(value: ParamValue) -> Iterator[str]:
    """The names in a feature param: strings, or the first item of each pair."""
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if isinstance(item, str):
            yield item
        elif isinstance(item, tuple) and item and isinstance(item[0], str):
            yield item[0]


def _nested_names(value: ParamValue) -> Iterator[str]:
    """Names used by components nested in a param (ensembles' models, unions' parts)."""
    if isinstance(value, ComponentNode | PipelineNode):
        yield from _names_in(value)
    elif isinstance(value, tuple):
        for item in value:
            yield from _nested_names(item)


def schema_problems(
    declared: Collection[str], candidate: ModelSpec, baseline: ModelSpec, baseline_version: int
) -> tuple[str, ...]:
    """What makes ``candidate`` incompatible with the deployed ``baseline``, in words (none: ok).

    Args:
        declared: The feature names of the model's schema.
        candidate: The spec of the version rolled out.
        baseline: The spec of the deployed version it would replace.
        baseline_version: That version's number, for the words.

    """
    problems = []
    undeclared = [name for name in features_named(candidate) if name not in declared]
    if undeclared:
        noun = "a feature" if len(undeclared) == 1 else f"{len(undeclared)} features"
        listed = ", ".join(repr(name) for name in undeclared)
        problems.append(f"names {noun} the model's schema does not declare: {listed}")
    if candidate.kind != baseline.kind:
        problems.append(
            f"predicts a {candidate.kind}'s output where version {baseline_version} predicts "
            f"a {baseline.kind}'s"
        )
    return tuple(problems)
