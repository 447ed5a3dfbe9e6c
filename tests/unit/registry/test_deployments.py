"""The registry's deployment rules: routes, roles, weights, mode and strategy."""

from __future__ import annotations

import math

import pytest

from headwater.services.registry import deployments
from headwater.services.registry.deployments import NewDeployment, Route
from headwater.shared.errors import InvalidInput, ModelNotFound


@pytest.mark.parametrize(
    "routes",
    [
        [Route(1, 1.0, "primary")],
        [Route(1, 0.9, "primary"), Route(2, 0.1, "canary")],
        [Route(1, 1.0, "primary"), Route(2, 1.0, "shadow")],
        [Route(1, 1.0, "primary"), Route(2, 0.0, "shadow")],
        [Route(1, 0.7, "primary"), Route(2, 0.2, "canary"), Route(3, 0.1, "canary")],
        [Route(1, 1 / 3, "primary"), Route(2, 1 / 3, "canary"), Route(3, 1 / 3, "canary")],
        [Route(1, 1.0, "primary"), Route(2, 0.0, "challenger")],
        [Route(2, 0.0, "primary"), Route(1, 1.0, "canary"), Route(3, 0.0, "challenger")],
    ],
)
def test_valid_routes(routes: list[Route]) -> None:
    assert deployments.validate_routes(routes, "m", {1, 2, 3}) == tuple(routes)


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ([], "at least one route"),
        ([Route(1, 0.9, "primary")], "must sum to 1, got 0.9"),
        ([Route(1, 1.0, "canary")], "exactly one primary route, got 0"),
        ([Route(1, 0.5, "primary"), Route(2, 0.5, "primary")], "exactly one primary route, got 2"),
        ([Route(1, -0.1, "primary")], r"weight must be in \[0, 1\]"),
        ([Route(1, math.nan, "primary")], r"weight must be in \[0, 1\]"),
        ([Route(1, 1.0, "")], "role is required"),
        ([Route(1, 1.0, "leader")], "unknown role 'leader'"),
        ([Route(1, 1.0, "primary"), Route(1, 0.0, "canary")], "one route only"),
        ([Route(1, 0.5, "primary"), Route(2, 0.5, "challenger")], "challenger serves no traffic"),
        ([Route(1, 0.0, "challenger")], "exactly one primary route, got 0"),
    ],
)
def test_invalid_routes(routes: list[Route], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        deployments.validate_routes(routes, "m", {1, 2})


def test_routes_to_missing_versions_are_not_found() -> None:
    with pytest.raises(ModelNotFound, match="route to version 3: model 'm' has no such version"):
        deployments.validate_routes([Route(3, 1.0, "primary")], "m", {1, 2})


def test_deployment_mode_and_strategy() -> None:
    routes = (Route(1, 1.0, "primary"),)
    pinned = NewDeployment("m", routes, "pinned", "blue-green")
    assert deployments.validate_new_deployment(pinned, {1})
    with pytest.raises(InvalidInput, match="unknown serving mode 'frozen'"):
        deployments.validate_new_deployment(NewDeployment("m", routes, "frozen"), {1})
    with pytest.raises(InvalidInput, match="invalid strategy 'Blue Green'"):
        deployments.validate_new_deployment(NewDeployment("m", routes, "live", "Blue Green"), {1})
