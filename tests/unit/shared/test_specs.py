from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from river import compose, linear_model, optim, preprocessing, stats, tree

from headwater.shared.errors import InvalidInput
from headwater.shared.specs import (
    ALLOWED_COMPONENTS,
    HEADWATER_COMPONENTS,
    MAX_DEPTH,
    ModelSpec,
    build_model,
    derive_seed,
    final_estimator,
    parse_spec,
    supports_task,
)

PIPELINE = {
    "pipeline": [
        {"component": "preprocessing.StandardScaler"},
        {
            "component": "linear_model.LogisticRegression",
            "params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.05}}, "l2": 0.01},
        },
    ]
}


def invalid(spec: object) -> str:
    text = spec if isinstance(spec, str) else json.dumps(spec)
    with pytest.raises(InvalidInput) as info:
        parse_spec(text)
    return str(info.value)


# --- parsing and canonical form --------------------------------------------------


def test_pipeline_spec_parses_and_builds() -> None:
    spec = parse_spec(json.dumps(PIPELINE))
    assert spec.kind == "classifier"
    model = build_model(spec)
    assert isinstance(model, compose.Pipeline)
    scaler, logreg = model.steps.values()
    assert isinstance(scaler, preprocessing.StandardScaler)
    assert isinstance(logreg, linear_model.LogisticRegression)
    assert isinstance(logreg.optimizer, optim.SGD)
    assert logreg.optimizer.learning_rate == 0.05
    assert logreg.l2 == 0.01


def test_single_node_spec() -> None:
    spec = parse_spec(
        '{"component": "tree.HoeffdingTreeRegressor", "params": {"grace_period": 50}}'
    )
    assert spec.kind == "regressor"
    model = build_model(spec)
    assert isinstance(model, tree.HoeffdingTreeRegressor)
    assert model.grace_period == 50


def test_to_json_is_canonical() -> None:
    shuffled = (
        '{"pipeline": [{"params": {}, "component": "preprocessing.StandardScaler"}, '
        '{"params": {"l2": 0.01, "optimizer": {"params": {"lr": 0.05}, "component": "optim.SGD"}},'
        ' "component": "linear_model.LogisticRegression"}]}'
    )
    canonical = parse_spec(json.dumps(PIPELINE)).to_json()
    assert parse_spec(shuffled).to_json() == canonical
    assert " " not in canonical
    assert canonical == json.dumps(json.loads(canonical), sort_keys=True, separators=(",", ":"))
    assert parse_spec(canonical) == parse_spec(json.dumps(PIPELINE))


def test_spec_is_hashable_and_frozen() -> None:
    spec = parse_spec(json.dumps(PIPELINE))
    assert hash(spec) == hash(parse_spec(spec.to_json()))
    with pytest.raises(AttributeError):
        spec.root = spec.root  # type: ignore[misc]


def test_allowed_components_cannot_be_changed() -> None:
    with pytest.raises(TypeError):
        ALLOWED_COMPONENTS["os.system"] = object  # type: ignore[index]
    for cls in ALLOWED_COMPONENTS.values():
        assert cls.__module__.startswith("river.") or cls in HEADWATER_COMPONENTS
        assert any(base.__module__.startswith("river.") for base in cls.__mro__)


# --- errors name the problem --------------------------------------------------------


def test_unknown_component_is_named_and_allowed_ones_listed() -> None:
    message = invalid({"component": "os.system", "params": {"command": "rm -rf /"}})
    assert "'os.system'" in message
    for name in ("linear_model.LogisticRegression", "tree.HoeffdingTreeClassifier"):
        assert name in message


def test_unknown_nested_component() -> None:
    message = invalid(
        {
            "component": "linear_model.LogisticRegression",
            "params": {"optimizer": {"component": "builtins.eval"}},
        }
    )
    assert "'builtins.eval'" in message
    assert "spec.params.optimizer" in message


@pytest.mark.parametrize(
    "spec",
    [
        {"component": "linear_model.LogisticRegression", "extra": 1},
        {"pipeline": [LR := {"component": "linear_model.LogisticRegression"}], "seed": 1},
        {"model": "linear_model.LogisticRegression"},
    ],
)
def test_unknown_top_level_keys(spec: dict[str, Any]) -> None:
    message = invalid(spec)
    assert "unknown keys" in message
    assert LR  # keeps the walrus honest


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a spec node"),
        ('"linear_model.LogisticRegression"', "expected a spec node"),
        ('{"pipeline": []}', "non-empty list"),
        ('{"pipeline": {}}', "non-empty list"),
        ('{"component": 3}', "unknown component 3"),
        ('{"component": "linear_model.LogisticRegression", "params": []}', "must be an object"),
        ('{"component": "linear_model.LogisticRegression", "params": {"l2": NaN}}', "NaN"),
    ],
)
def test_malformed_specs(text: str, fragment: str) -> None:
    assert fragment in invalid(text)


def test_unknown_param_names_component_and_param() -> None:
    message = invalid({"component": "linear_model.LogisticRegression", "params": {"lr": 0.1}})
    assert "linear_model.LogisticRegression" in message
    assert "'lr'" in message
    assert "optimizer" in message  # lists what it accepts


@pytest.mark.parametrize(
    ("component", "param", "value", "fragment"),
    [
        ("tree.HoeffdingTreeClassifier", "grace_period", "200", "must be int"),
        ("tree.HoeffdingTreeClassifier", "grace_period", 2.5, "must be int"),
        ("tree.HoeffdingTreeClassifier", "grace_period", True, "must be int"),
        ("ensemble.BaggingClassifier", "n_models", 2.0, "must be int"),
        ("linear_model.LogisticRegression", "l2", "high", "must be float"),
        ("linear_model.LogisticRegression", "l2", [1.0], "does not take a list"),
        ("linear_model.LogisticRegression", "l2", {"component": "optim.SGD"}, "does not take"),
        ("preprocessing.StandardScaler", "with_std", 1, "must be bool"),
        (
            "linear_model.LogisticRegression",
            "optimizer",
            {"component": "tree.HoeffdingTreeClassifier"},
            "must be an Optimizer component",
        ),
        (
            "ensemble.BaggingClassifier",
            "model",
            {"component": "linear_model.LinearRegression"},
            "must be a Classifier component",
        ),
        ("tree.HoeffdingTreeClassifier", "splitter", "gaussian", "must be null"),
        ("tree.HoeffdingTreeClassifier", "nominal_attributes", [1], "must be str"),
        ("ensemble.SRPRegressor", "seed", "42", "must be int or null"),
    ],
)
def test_wrong_param_types(component: str, param: str, value: object, fragment: str) -> None:
    params = {param: value}
    if component == "ensemble.BaggingClassifier" and param != "model":
        params["model"] = {"component": "tree.HoeffdingTreeClassifier"}
    message = invalid({"component": component, "params": params})
    assert component in message
    assert repr(param) in message
    assert fragment in message


def test_float_params_accept_ints() -> None:
    spec = parse_spec('{"component": "linear_model.LogisticRegression", "params": {"l2": 1}}')
    assert build_model(spec).l2 == 1


def test_only_the_last_pipeline_step_may_predict() -> None:
    message = invalid({"pipeline": [LR, {"component": "preprocessing.StandardScaler"}, LR]})
    assert "spec.pipeline[0]" in message
    assert "not a transformer" in message


def test_a_spec_must_build_a_predictor() -> None:
    assert "neither" in invalid({"component": "preprocessing.StandardScaler"})
    assert "neither" in invalid({"pipeline": [{"component": "preprocessing.StandardScaler"}]})
    assert "neither" in invalid({"component": "optim.SGD"})


def test_depth_and_size_limits() -> None:
    node: dict[str, Any] = LR
    for _ in range(MAX_DEPTH + 2):
        node = {"component": "ensemble.BaggingClassifier", "params": {"model": node, "n_models": 1}}
    assert "nested deeper" in invalid(node)
    nested_list = "[" * 5000 + "]" * 5000
    message = invalid(
        '{"component": "tree.HoeffdingTreeClassifier", "params": '
        f'{{"nominal_attributes": {nested_list}}}}}'
    )
    assert "nested deeper" in message or "not valid JSON" in message
    assert "larger than" in invalid(json.dumps({**LR, "params": {"l2": 0.0}}) + " " * 70_000)


def test_constructor_errors_become_invalid_input() -> None:
    spec = '{"component": "neighbors.KNNRegressor", "params": {"aggregation_method": "bogus"}}'
    with pytest.raises(InvalidInput, match=r"neighbors\.KNNRegressor .*aggregation_method"):
        build_model(spec)


# --- variadic components ------------------------------------------------------------


def test_select_discard_and_imputer_params() -> None:
    spec = {
        "pipeline": [
            {
                "component": "preprocessing.StatImputer",
                "params": {"imputers": [["x1", {"component": "stats.Mean"}], ["x2", -1]]},
            },
            {"component": "compose.Discard", "params": {"keys": ["x3"]}},
            LR,
        ]
    }
    model = build_model(json.dumps(spec))
    imputer, discard, _ = model.steps.values()
    assert isinstance(imputer.stats["x1"], stats.Mean)
    assert discard.keys == {"x3"}
    model.learn_one({"x1": 1.0, "x2": 2.0, "x3": 3.0}, True)
    assert model["StatImputer"].transform_one({"x1": None, "x2": None}) == {"x1": 1.0, "x2": -1}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"keys": "x1"}, "must be a list"),
        ({"keys": [1]}, "must be str"),
    ],
)
def test_bad_variadic_params(params: dict[str, Any], fragment: str) -> None:
    message = invalid({"pipeline": [{"component": "compose.Select", "params": params}, LR]})
    assert "compose.Select" in message and "'keys'" in message and fragment in message


def test_bad_imputer_pair() -> None:
    message = invalid(
        {
            "pipeline": [
                {"component": "preprocessing.StatImputer", "params": {"imputers": [["x1"]]}},
                LR,
            ]
        }
    )
    assert "pair" in message and "spec.pipeline[0].params.imputers[0]" in message


# --- seeds ------------------------------------------------------------------------------


ENSEMBLE = {
    "component": "ensemble.BaggingClassifier",
    "params": {"model": {"component": "tree.HoeffdingAdaptiveTreeClassifier"}, "n_models": 2},
}


def test_seed_reaches_every_seeded_component_distinctly() -> None:
    model = build_model(json.dumps(ENSEMBLE), seed=7)
    assert model.seed == derive_seed(7, "spec")
    assert model.model.seed == derive_seed(7, "spec.params.model")
    assert model.seed != model.model.seed


def test_explicit_seed_is_kept_and_no_seed_means_none() -> None:
    spec = json.loads(json.dumps(ENSEMBLE))
    spec["params"]["seed"] = 99
    assert build_model(json.dumps(spec), seed=7).seed == 99
    assert build_model(json.dumps(ENSEMBLE)).seed is None


def test_same_seed_same_model_different_seed_differs(
    synthetic_stream: Callable[..., list[tuple[dict[str, Any], Any]]],
) -> None:
    spec = '{"component": "forest.ARFClassifier", "params": {"n_models": 3}}'
    data = synthetic_stream(300, regression=False)
    probas = []
    for seed in (1, 1, 2):
        model = build_model(spec, seed=seed)
        for x, y in data:
            model.learn_one(x, y)
        probas.append([model.predict_proba_one(x) for x, _ in data[:50]])
    assert probas[0] == probas[1]
    assert probas[0] != probas[2]


# --- every allowed component ------------------------------------------------------------


@pytest.mark.parametrize("name", list(ALLOWED_COMPONENTS))
def test_every_allowed_component_builds_learns_and_predicts(
    name: str,
    component_spec: Callable[[str], dict[str, Any]],
    synthetic_stream: Callable[..., list[tuple[dict[str, Any], Any]]],
) -> None:
    spec_dict = component_spec(name)
    spec = parse_spec(json.dumps(spec_dict))
    assert name in spec.to_json()
    model = build_model(spec, seed=5)
    for x, y in synthetic_stream(60, regression=spec.kind == "regressor"):
        model.learn_one(x, y)
    full = {"x1": 0.5, "x2": 0.1, "x3": 3.0}
    for x in (full, {"x2": 0.1, "x3": 3.0}, {**full, "new": 1.0}):  # missing and new features
        prediction = model.predict_one(x)
        if spec.kind == "classifier":
            assert prediction in (True, False)
        else:
            assert isinstance(prediction, float)


def test_supports_task() -> None:
    logreg = build_model(json.dumps(PIPELINE))
    softmax = build_model('{"component": "linear_model.SoftmaxRegression"}')
    ovr = build_model(
        '{"component": "multiclass.OneVsRestClassifier", "params": '
        '{"classifier": {"component": "linear_model.LogisticRegression"}}}'
    )
    regressor = build_model('{"component": "linear_model.LinearRegression"}')
    assert isinstance(final_estimator(logreg), linear_model.LogisticRegression)
    assert supports_task(logreg, "binary") and not supports_task(logreg, "multiclass")
    assert supports_task(softmax, "multiclass") and supports_task(ovr, "multiclass")
    assert not supports_task(logreg, "regression")
    assert supports_task(regressor, "regression") and not supports_task(regressor, "binary")


def test_model_spec_round_trips_through_dict() -> None:
    spec = parse_spec(json.dumps(PIPELINE))
    assert isinstance(spec, ModelSpec)
    assert spec.to_dict() == json.loads(spec.to_json())
