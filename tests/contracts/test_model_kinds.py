"""The contract every model kind the platform can build must honour.

For a representative spec of each estimator family (binary, multiclass and
regression; with scalers, imputers and encoders in pipelines):

- serialize -> sign -> verify -> load gives a model with identical predictions
  that keeps learning identically;
- a build is deterministic given a seed;
- rows missing a feature, or carrying one never seen, are predicted (and learnt)
  without error;
- the insertion order of a row's features does not change its prediction.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from river import base

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.specs import ALLOWED_COMPONENTS, build_model, supports_task

Task = Literal["binary", "multiclass", "regression"]
N_TRAIN = 200
N_PROBE = 20
SEED = 1234


def node(component: str, **params: Any) -> dict[str, Any]:
    return {"component": component, "params": params} if params else {"component": component}


def pipe(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"pipeline": list(nodes)}


SCALER = node("preprocessing.StandardScaler")
IMPUTER = node("preprocessing.StatImputer", imputers=[["x1", node("stats.Mean")], ["n", 0]])
ONE_HOT_CITY = node(
    "compose.TransformerUnion",
    transformers=[
        pipe(node("compose.Select", keys=["city"]), node("preprocessing.OneHotEncoder")),
        node("compose.Discard", keys=["city"]),
    ],
)
LOGREG = node("linear_model.LogisticRegression", optimizer=node("optim.SGD", lr=0.05))
TREE = node("tree.HoeffdingTreeClassifier", grace_period=50)


@dataclass(frozen=True)
class Case:
    name: str
    task: Task
    spec: dict[str, Any]
    categorical: bool = False  # the stream carries a str feature
    tags: tuple[str, ...] = field(default=())

    @property
    def spec_json(self) -> str:
        return json.dumps(self.spec)


CASES = [
    # binary classifiers
    Case("logreg+imputer+scaler", "binary", pipe(IMPUTER, SCALER, LOGREG)),
    Case(
        "logreg+onehot",
        "binary",
        pipe(
            ONE_HOT_CITY,
            SCALER,
            node("linear_model.LogisticRegression", optimizer=node("optim.Adam", lr=0.01)),
        ),
        True,
    ),
    Case("pa", "binary", pipe(SCALER, node("linear_model.PAClassifier", C=0.5))),
    Case(
        "perceptron",
        "binary",
        pipe(node("preprocessing.MinMaxScaler"), node("linear_model.Perceptron")),
    ),
    Case("alma", "binary", pipe(SCALER, node("linear_model.ALMAClassifier"))),
    Case("hoeffding-tree", "binary", TREE, True),
    Case("efdt", "binary", node("tree.ExtremelyFastDecisionTreeClassifier", grace_period=50), True),
    Case("hat", "binary", node("tree.HoeffdingAdaptiveTreeClassifier", grace_period=50), True),
    Case("gaussian-nb", "binary", node("naive_bayes.GaussianNB")),
    Case("bernoulli-nb", "binary", node("naive_bayes.BernoulliNB")),
    Case(
        "multinomial-nb",
        "binary",
        pipe(node("preprocessing.MinMaxScaler"), node("naive_bayes.MultinomialNB")),
    ),
    Case(
        "complement-nb",
        "binary",
        pipe(
            node("compose.Discard", keys=["x2"]),
            node("preprocessing.MinMaxScaler"),
            node("naive_bayes.ComplementNB"),
        ),
    ),
    Case(
        "bagging-of-pipelines",
        "binary",
        node("ensemble.BaggingClassifier", model=pipe(SCALER, LOGREG), n_models=3),
    ),
    Case(
        "adwin-bagging", "binary", node("ensemble.ADWINBaggingClassifier", model=TREE, n_models=3)
    ),
    Case(
        "leveraging-bagging",
        "binary",
        node("ensemble.LeveragingBaggingClassifier", model=TREE, n_models=3),
    ),
    Case("adaboost", "binary", node("ensemble.AdaBoostClassifier", model=TREE, n_models=3)),
    Case("srp", "binary", node("ensemble.SRPClassifier", n_models=3)),
    Case("arf", "binary", node("forest.ARFClassifier", n_models=3), True),
    Case("amf", "binary", node("forest.AMFClassifier", n_estimators=3)),
    Case("knn", "binary", pipe(SCALER, node("neighbors.KNNClassifier", n_neighbors=5))),
    # multiclass classifiers
    Case("softmax", "multiclass", pipe(SCALER, node("linear_model.SoftmaxRegression"))),
    Case(
        "ovr-logreg",
        "multiclass",
        pipe(SCALER, node("multiclass.OneVsRestClassifier", classifier=LOGREG)),
    ),
    Case("hoeffding-tree-mc", "multiclass", TREE, True),
    Case("arf-mc", "multiclass", node("forest.ARFClassifier", n_models=3)),
    Case("gaussian-nb-mc", "multiclass", node("naive_bayes.GaussianNB")),
    Case(
        "knn-mc",
        "multiclass",
        pipe(SCALER, node("neighbors.KNNClassifier", engine=node("neighbors.LazySearch"))),
    ),
    # regressors
    Case(
        "linreg+imputer+scaler",
        "regression",
        pipe(
            IMPUTER,
            SCALER,
            node("linear_model.LinearRegression", optimizer=node("optim.SGD", lr=0.01)),
        ),
    ),
    Case(
        "linreg+onehot",
        "regression",
        pipe(ONE_HOT_CITY, SCALER, node("linear_model.LinearRegression")),
        True,
    ),
    Case("pa-regressor", "regression", pipe(SCALER, node("linear_model.PARegressor"))),
    Case(
        "hoeffding-tree-regressor",
        "regression",
        node("tree.HoeffdingTreeRegressor", grace_period=50),
    ),
    Case(
        "hat-regressor", "regression", node("tree.HoeffdingAdaptiveTreeRegressor", grace_period=50)
    ),
    Case(
        "bagging-regressor",
        "regression",
        node(
            "ensemble.BaggingRegressor",
            model=pipe(SCALER, node("linear_model.LinearRegression")),
            n_models=3,
        ),
    ),
    Case("srp-regressor", "regression", node("ensemble.SRPRegressor", n_models=3)),
    Case("arf-regressor", "regression", node("forest.ARFRegressor", n_models=3)),
    Case("amf-regressor", "regression", node("forest.AMFRegressor", n_estimators=3)),
    Case("knn-regressor", "regression", pipe(SCALER, node("neighbors.KNNRegressor"))),
]
IDS = [case.name for case in CASES]
FEATURES = ("x1", "x2", "x3", "n")


def make_stream(case: Case, n: int, seed: int) -> list[tuple[dict[str, Any], Any]]:
    """A seeded synthetic stream whose labels suit the case's task."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x: dict[str, Any] = {
            "x1": rng.uniform(-1, 1),
            "x2": rng.gauss(0, 1),
            "x3": rng.uniform(0, 10),
            "n": rng.randint(0, 4),
        }
        if case.categorical:
            x["city"] = rng.choice(["lima", "oslo", "pune"])
        signal = x["x1"] + 0.5 * x["x2"] - 0.1 * x["x3"] + (0.5 if x.get("city") == "oslo" else 0)
        if case.task == "binary":
            y: Any = signal + rng.gauss(0, 0.2) > -0.5
        elif case.task == "multiclass":
            y = "low" if signal < -1 else ("mid" if signal < 0 else "high")
        else:
            y = 2 * signal + rng.gauss(0, 0.1)
        rows.append((x, y))
    return rows


def trained(case: Case, seed: int = SEED) -> tuple[Any, list[tuple[dict[str, Any], Any]]]:
    model = build_model(case.spec_json, seed=seed)
    data = make_stream(case, N_TRAIN + N_PROBE, seed=7)
    for x, y in data[:N_TRAIN]:
        model.learn_one(x, y)
    return model, data[N_TRAIN:]


def answers(model: Any, case: Case, x: dict[str, Any]) -> tuple[Any, ...]:
    """Everything the gateway would serve for one row."""
    if case.task == "regression":
        return (model.predict_one(x),)
    return model.predict_one(x), model.predict_proba_one(x)


def assert_valid(answer: tuple[Any, ...], case: Case) -> None:
    if case.task == "regression":
        assert isinstance(answer[0], float | int) and math.isfinite(answer[0])
    else:
        label, proba = answer
        expected = {True, False} if case.task == "binary" else {"low", "mid", "high"}
        assert label in expected | {None}
        assert isinstance(proba, dict) and set(proba) <= expected


def assert_close(left: tuple[Any, ...], right: tuple[Any, ...], case: Case) -> None:
    """Equal up to rounding: float sums depend on the order features are visited in."""
    if case.task == "regression":
        assert left[0] == pytest.approx(right[0], rel=1e-9, abs=1e-12)
        return
    assert left[1] == pytest.approx(right[1], rel=1e-9, abs=1e-12)
    top = sorted(left[1].values(), reverse=True)
    if len(top) < 2 or top[0] - top[1] > 1e-9:  # no near-tie: the same label
        assert left[0] == right[0]


def predictions_of_every_case() -> dict[str, list[tuple[Any, ...]]]:
    """What each case's model answers on its probe rows after training."""
    out = {}
    for case in CASES:
        model, probe = trained(case)
        out[case.name] = [answers(model, case, x) for x, _ in probe]
    return out


@pytest.fixture(scope="module")
def codec() -> ArtifactCodec:
    return ArtifactCodec("contract-suite-key")


def test_every_predictor_in_the_allow_list_has_a_contract_case() -> None:
    used = {name for case in CASES for name in ALLOWED_COMPONENTS if f'"{name}"' in case.spec_json}
    predictors = {
        name
        for name, cls in ALLOWED_COMPONENTS.items()
        if issubclass(cls, base.Classifier | base.Regressor)
    }
    assert predictors - used == set()
    assert {case.task for case in CASES} == {"binary", "multiclass", "regression"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_spec_serves_its_task(case: Case) -> None:
    assert supports_task(build_model(case.spec_json, seed=SEED), case.task)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_round_trip_through_a_signed_artifact(case: Case, codec: ArtifactCodec) -> None:
    model, probe = trained(case)
    artifact = codec.encode(model)
    codec.verify(artifact.content, artifact.signature, artifact.sha256)
    loaded = codec.decode(artifact.content, artifact.signature, artifact.sha256)
    for x, y in probe:
        assert answers(loaded, case, x) == answers(model, case, x)
        model.learn_one(x, y)
        loaded.learn_one(x, y)
    assert [answers(loaded, case, x) for x, _ in probe] == [
        answers(model, case, x) for x, _ in probe
    ]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deterministic_with_a_seed(case: Case) -> None:
    first, probe = trained(case, seed=SEED)
    second, _ = trained(case, seed=SEED)
    assert [answers(first, case, x) for x, _ in probe] == [
        answers(second, case, x) for x, _ in probe
    ]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tolerant_of_missing_and_new_features(case: Case) -> None:
    model, probe = trained(case)
    x, y = probe[0]
    variants = [{k: v for k, v in x.items() if k != name} for name in x]
    variants.append({**x, "never_seen": 0.5})
    if case.categorical:
        variants.append({**x, "city": "quito"})  # a category never seen either
    for row in variants:
        assert_valid(answers(model, case, row), case)
    for row in variants:
        model.learn_one(row, y)
    assert_valid(answers(model, case, x), case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_feature_order_is_irrelevant(case: Case) -> None:
    model, probe = trained(case)
    rng = random.Random(3)
    for x, _ in probe:
        keys = list(x)
        rng.shuffle(keys)
        for order in (keys, list(reversed(x))):
            assert_close(
                answers(model, case, {k: x[k] for k in order}), answers(model, case, x), case
            )


def test_deterministic_across_processes() -> None:
    """Seeds are derived, never hashed: another process (other PYTHONHASHSEED) agrees."""
    script = (
        "import importlib.util, pickle, sys\n"
        f"spec = importlib.util.spec_from_file_location('contract_cases', {__file__!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['contract_cases'] = module\n"
        "spec.loader.exec_module(module)\n"
        "sys.stdout.buffer.write(pickle.dumps(module.predictions_of_every_case()))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, timeout=90, check=True
    )
    theirs = pickle.loads(done.stdout)
    ours = predictions_of_every_case()
    for case in CASES:
        assert len(theirs[case.name]) == N_PROBE
        for mine, other in zip(ours[case.name], theirs[case.name], strict=True):
            assert_close(mine, other, case)
