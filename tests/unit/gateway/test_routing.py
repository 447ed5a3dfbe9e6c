"""Choosing a route by weight, deterministically per request key."""

from __future__ import annotations

import math
import uuid

import pytest

from headwater.services.gateway.routing import (
    CANARY,
    PRIMARY,
    SHADOW,
    Route,
    RouteTable,
    uniform,
)
from headwater.shared.errors import ModelNotReady
from headwater.shared.pb import registry_pb2


def test_same_key_same_route() -> None:
    table = RouteTable.of([Route(1, 0.5, PRIMARY), Route(2, 0.5, CANARY)])
    keys = [uuid.uuid4().hex for _ in range(200)]
    first = [table.choose(k).answer.version for k in keys]
    assert [table.choose(k).answer.version for k in keys] == first
    assert set(first) == {1, 2}


@pytest.mark.parametrize("canary_weight", [0.05, 0.2, 0.5])
def test_split_follows_weights(canary_weight: float) -> None:
    n = 20_000
    table = RouteTable.of([Route(1, 1 - canary_weight, PRIMARY), Route(2, canary_weight, CANARY)])
    hits = sum(table.choose(f"req-{i}").answer.version == 2 for i in range(n))
    # Four standard deviations of a binomial: fails by chance about once in 15 000 runs,
    # and the keys are fixed, so the outcome is the same on every run.
    sigma = math.sqrt(n * canary_weight * (1 - canary_weight))
    assert abs(hits - n * canary_weight) < 4 * sigma


def test_uniform_is_spread_over_unit_interval() -> None:
    values = [uniform(str(i)) for i in range(10_000)]
    assert all(0.0 <= v < 1.0 for v in values)
    deciles = [sum(int(v * 10) == d for v in values) for d in range(10)]
    assert min(deciles) > 900 and max(deciles) < 1100


def test_zero_weight_route_never_answers() -> None:
    table = RouteTable.of([Route(1, 1.0, PRIMARY), Route(2, 0.0, CANARY)])
    assert {table.choose(str(i)).answer.version for i in range(2000)} == {1}


def test_shadow_mirrors_its_share_and_never_answers() -> None:
    table = RouteTable.of([Route(1, 0.5, PRIMARY), Route(2, 0.5, CANARY), Route(3, 0.25, SHADOW)])
    choices = [table.choose(f"k{i}") for i in range(8000)]
    mirrored = [c for c in choices if c.shadows]
    assert 0.22 < len(mirrored) / len(choices) < 0.28
    # independent of the answering route: about half of the mirrored requests each
    share_v1 = sum(c.answer.version == 1 for c in mirrored) / len(mirrored)
    assert 0.45 < share_v1 < 0.55
    assert table.choose("k1") == table.choose("k1")


def test_full_shadow_predicts_every_request() -> None:
    table = RouteTable.of([Route(1, 1.0, PRIMARY), Route(3, 1.0, SHADOW)])
    choices = [table.choose(str(i)) for i in range(500)]
    assert {c.answer.version for c in choices} == {1}
    assert all([s.version for s in c.shadows] == [3] for c in choices)
    assert table.versions == (1, 3)


def test_unset_weight_of_single_primary_takes_all() -> None:
    deployment = registry_pb2.Deployment(
        model="m", routes=[registry_pb2.Route(version=4, role=registry_pb2.ROUTE_ROLE_PRIMARY)]
    )
    table = RouteTable.of(Route.from_proto(r) for r in deployment.routes)
    assert table.choose("any").answer == Route(4, 0.0, PRIMARY)


def test_only_shadows_is_not_ready() -> None:
    with pytest.raises(ModelNotReady, match="no primary or canary route"):
        RouteTable.of([Route(1, 1.0, SHADOW)]).choose("k")
