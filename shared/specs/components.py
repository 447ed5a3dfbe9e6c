"""The allow-list: every River component a spec may name, and headwater's replacements.

Nothing outside :data:`ALLOWED_COMPONENTS` is ever resolved from a spec, and
nothing named in a spec is imported.

>>> ALLOWED_COMPONENTS["linear_model.LogisticRegression"].__name__
'LogisticRegression'
>>> ALLOWED_COMPONENTS["preprocessing.StatImputer"] is StatImputer
True
>>> StatImputer.__module__
'headwater.shared.specs'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from river import (
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

# Pickled models name the module of headwater's replacements, and the artifact
# unpickler allows exactly that one: keep it the package's path (which re-exports
# them), whichever module defines them, so artifacts stored before stay loadable.
PICKLED_MODULE = "headwater.shared.specs"


class StatImputer(preprocessing.StatImputer):
    """River's ``StatImputer`` that also fills features absent from a row.

    A row leaves out an optional feature the caller did not send (see
    :meth:`headwater.shared.features.FeatureSchema.validate_row`); River's own
    imputer only fills ``None`` values and raises KeyError on absent ones.
    """

    __module__ = PICKLED_MODULE

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

    __module__ = PICKLED_MODULE

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
