"""The rules of a deployment: its routes, their roles and weights, its mode (pure, no I/O).

A deployment sends a model's traffic to its versions: exactly one primary,
canaries that share the answers with it, shadows that get a mirrored share,
challengers that are loaded and learn but serve nothing.
Every check raises one of headwater's errors naming the problem, like
:mod:`.domain`, whose name rules it reuses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from headwater.services.registry.domain import validate_choice, validate_model_name
from headwater.shared import enums
from headwater.shared.errors import InvalidInput, ModelNotFound

ROLES = enums.names(enums.ROLES)
MODES = enums.names(enums.MODES)
DEFAULT_STRATEGY = "direct"
WEIGHT_TOLERANCE = 1e-9
#: Roles whose routes answer requests: their weights split the traffic.
ANSWERING_ROLES = frozenset({"primary", "canary"})

_STRATEGY = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class Route:
    """A share of a model's traffic sent to one version in one role."""

    version: int
    weight: float
    role: str


@dataclass(frozen=True)
class NewDeployment:
    """A deployment as a caller asks to set it."""

    model: str
    routes: tuple[Route, ...]
    mode: str = "live"
    strategy: str = DEFAULT_STRATEGY


def validate_routes(
    routes: Iterable[Route], model: str, existing: Collection[int]
) -> tuple[Route, ...]:
    """Check a deployment's routes against the model's existing versions.

    There must be at least one route and exactly one primary; every version
    exists and appears once; weights lie in [0, 1]; the weights of the
    routes that serve answers (primary and canaries) sum to 1. A shadow
    route's weight is the share of traffic mirrored to it; a challenger
    serves no traffic, so its weight is 0.

    >>> validate_routes([Route(1, 0.9, "primary"), Route(2, 0.1, "canary")], "m", {1, 2})[1]
    Route(version=2, weight=0.1, role='canary')
    >>> validate_routes([Route(1, 0.5, "primary")], "m", {1})
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: weights of primary and canary routes must sum to 1, \
got 0.5
    >>> validate_routes([Route(3, 1.0, "primary")], "m", {1})
    Traceback (most recent call last):
    ...
    headwater.shared.errors.ModelNotFound: route to version 3: model 'm' has no such version
    >>> validate_routes([Route(1, 1.0, "primary"), Route(2, 0.0, "challenger")], "m", {1, 2})[1]
    Route(version=2, weight=0.0, role='challenger')
    >>> validate_routes([Route(1, 0.8, "primary"), Route(2, 0.2, "challenger")], "m", {1, 2})
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: route to version 2: a challenger serves no traffic, \
its weight must be 0, got 0.2
    """
    chosen = tuple(routes)
    if not chosen:
        raise InvalidInput("a deployment needs at least one route")
    versions = [r.version for r in chosen]
    if len(set(versions)) != len(versions):
        raise InvalidInput(f"each version may appear in one route only, got {versions}")
    for route in chosen:
        _check_route(route, model, existing)
    primaries = sum(1 for r in chosen if r.role == "primary")
    if primaries != 1:
        raise InvalidInput(f"a deployment needs exactly one primary route, got {primaries}")
    total = math.fsum(r.weight for r in chosen if r.role in ANSWERING_ROLES)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise InvalidInput(f"weights of primary and canary routes must sum to 1, got {total:g}")
    return chosen


def _check_route(route: Route, model: str, existing: Collection[int]) -> None:
    where = f"route to version {route.version}"
    try:
        validate_choice("role", route.role, ROLES)
    except InvalidInput as error:
        raise InvalidInput(f"{where}: {error}") from None
    if not (math.isfinite(route.weight) and 0.0 <= route.weight <= 1.0):
        raise InvalidInput(f"{where}: weight must be in [0, 1], got {route.weight}")
    if route.role == "challenger" and route.weight != 0.0:
        raise InvalidInput(
            f"{where}: a challenger serves no traffic, its weight must be 0, got {route.weight}"
        )
    if route.version not in existing:
        raise ModelNotFound(f"{where}: model {model!r} has no such version")


def validate_new_deployment(deployment: NewDeployment, existing: Collection[int]) -> NewDeployment:
    """Check a deployment to set, given the model's existing version numbers.

    >>> validate_new_deployment(NewDeployment("m", (Route(1, 1.0, "primary"),)), {1}).mode
    'live'
    """
    validate_model_name(deployment.model)
    validate_choice("serving mode", deployment.mode, MODES)
    if not _STRATEGY.fullmatch(deployment.strategy):
        raise InvalidInput(
            f"invalid strategy {deployment.strategy!r}: use 1-32 of a-z 0-9 _ - starting "
            "with a letter"
        )
    validate_routes(deployment.routes, deployment.model, existing)
    return deployment
