"""Declarative River pipeline specs, resolved against an allow-list.

A spec is JSON: one component node, or a pipeline of nodes. A param whose value
is a node (or a list of nodes) is resolved the same way, so optimizers, losses,
drift detectors and the base models of ensembles are specs too. Component
names are looked up in :data:`ALLOWED_COMPONENTS`; nothing named in a spec is
ever imported, and params are checked against the constructor's signature
before anything is built.

Three parts, one module each, all re-exported here:

- :mod:`~headwater.shared.specs.components`: the allow-list of River
  components and headwater's drop-in replacements;
- :mod:`~headwater.shared.specs.params`: the parameter rules, read off the
  constructors' signatures;
- :mod:`~headwater.shared.specs.nodes` (the spec tree, parsed and checked) and
  :mod:`~headwater.shared.specs.building` (estimators built from it).

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

>>> from headwater.shared.errors import InvalidInput
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

from headwater.shared.specs.building import (
    build_model,
    derive_seed,
    final_estimator,
    supports_task,
)
from headwater.shared.specs.components import (
    ALLOWED_COMPONENTS,
    HEADWATER_COMPONENTS,
    Select,
    StatImputer,
)
from headwater.shared.specs.nodes import (
    MAX_DEPTH,
    MAX_SPEC_BYTES,
    ComponentNode,
    ModelSpec,
    Node,
    ParamValue,
    PipelineNode,
    Scalar,
    parse_spec,
    spec_from_dict,
)

__all__ = [
    "ALLOWED_COMPONENTS",
    "HEADWATER_COMPONENTS",
    "MAX_DEPTH",
    "MAX_SPEC_BYTES",
    "ComponentNode",
    "ModelSpec",
    "Node",
    "ParamValue",
    "PipelineNode",
    "Scalar",
    "Select",
    "StatImputer",
    "build_model",
    "derive_seed",
    "final_estimator",
    "parse_spec",
    "spec_from_dict",
    "supports_task",
]
