"""Building River estimators from parsed specs, and what a built model can do.

Every component is resolved through the allow-list and given only params the
rules accepted while parsing; ``seed`` gives components that take one a seed
derived from their place in the spec, so two builds with one seed agree.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from river import base, compose

from headwater.shared.errors import InvalidInput
from headwater.shared.specs.components import ALLOWED_COMPONENTS
from headwater.shared.specs.nodes import (
    ComponentNode,
    ModelSpec,
    Node,
    ParamValue,
    PipelineNode,
    parse_spec,
)
from headwater.shared.specs.params import param_rules


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
    rules = param_rules(node.component)
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


# --- what a built model can do ---------------------------------------------------


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
