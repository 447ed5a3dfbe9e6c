"""Helpers for the spec and artifact tests: a usable spec for every allowed component."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

LR: dict[str, Any] = {"component": "linear_model.LogisticRegression"}
LIN: dict[str, Any] = {"component": "linear_model.LinearRegression"}
HT: dict[str, Any] = {"component": "tree.HoeffdingTreeClassifier"}


def _node(component: str, **params: Any) -> dict[str, Any]:
    return {"component": component, "params": params} if params else {"component": component}


def _pipe(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"pipeline": list(nodes)}


def _transformer_params(cls: str) -> dict[str, Any]:
    return {
        "Select": {"keys": ["x1", "x2"]},
        "Discard": {"keys": ["x3"]},
        "TransformerUnion": {
            "transformers": [
                _node("preprocessing.StandardScaler"),
                _node("compose.Select", keys=["x3"]),
            ]
        },
        "StatImputer": {"imputers": [["x1", _node("stats.Mean")], ["x2", 0.0]]},
        "FeatureHasher": {"n_features": 64},
    }.get(cls, {})


def _ensemble_spec(name: str, cls: str) -> dict[str, Any]:
    if cls.startswith("SRP"):
        return _node(name, n_models=3)
    if cls == "BaggingRegressor":
        return _node(name, model=LIN, n_models=3)
    if name.startswith("multiclass."):
        return _node(name, classifier=LR)
    return _node(name, model=HT, n_models=3)


def spec_using(name: str) -> dict[str, Any]:
    """A small predictor spec that uses the allowed component ``name``."""
    module, cls = name.rsplit(".", 1)
    if module in ("preprocessing", "compose", "feature_extraction"):
        return _pipe(_node(name, **_transformer_params(cls)), LR)
    if module == "optim":
        return _node("linear_model.LogisticRegression", optimizer=_node(name))
    if module == "optim.losses":
        host = {"Log": LR, "Hinge": LR, "CrossEntropy": _node("linear_model.SoftmaxRegression")}
        return {**host.get(cls, LIN), "params": {"loss": _node(name)}}
    if module == "optim.initializers":
        params = {"value": 0.5} if cls == "Constant" else {}
        return _node("linear_model.LinearRegression", initializer=_node(name, **params))
    if module == "stats":
        return _pipe(_node("preprocessing.StatImputer", imputers=[["x1", _node(name)]]), LR)
    if module == "drift":
        return _node("tree.HoeffdingAdaptiveTreeClassifier", drift_detector=_node(name))
    if name == "neighbors.LazySearch":
        return _node("neighbors.KNNClassifier", engine=_node(name, window_size=20))
    if module in ("ensemble", "multiclass"):
        return _ensemble_spec(name, cls)
    if module == "forest":
        return _node(name, **({"n_models": 3} if cls.startswith("ARF") else {"n_estimators": 3}))
    if cls in ("MultinomialNB", "ComplementNB"):  # count features: no negatives
        return _pipe(_node("preprocessing.MinMaxScaler"), _node(name))
    return _node(name)


def stream(n: int, *, regression: bool, seed: int = 1) -> list[tuple[dict[str, Any], Any]]:
    """A seeded synthetic stream of three numeric features."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = {"x1": rng.uniform(-1, 1), "x2": rng.gauss(0, 1), "x3": rng.uniform(0, 10)}
        y: Any = 2 * x["x1"] - x["x2"] if regression else x["x1"] + x["x2"] > 0.2
        rows.append((x, y))
    return rows


@pytest.fixture
def component_spec() -> Callable[[str], dict[str, Any]]:
    return spec_using


@pytest.fixture
def synthetic_stream() -> Callable[..., list[tuple[dict[str, Any], Any]]]:
    return stream
