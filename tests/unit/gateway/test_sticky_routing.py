"""Sticky routing by key: canaries own the low buckets; a zero-weight primary; challengers."""

from __future__ import annotations

import hashlib
import math

import pytest
from river import linear_model

from headwater.services.gateway.model_cache import ServedVersion
from headwater.services.gateway.routing import (
    CANARY,
    CHALLENGER,
    PRIMARY,
    SHADOW,
    Route,
    RouteTable,
    bucket,
    routing_key_hash,
)
from headwater.services.gateway.service import InferenceService
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import registry_pb2
from tests.unit.gateway.test_service import ListPublisher, make_cache, request

R = registry_pb2
KEYS = [f"user-{i}" for i in range(20_000)]
STEPS = (0.05, 0.25, 0.5, 1.0)


def canary_step(weight: float) -> RouteTable:
    """What the registry writes at a canary step: the primary keeps the rest (0 at 100 %)."""
    return RouteTable.of([Route(1, 1.0 - weight, PRIMARY), Route(2, weight, CANARY)])


def test_routing_key_hash_is_the_first_8_bytes_of_blake2b_and_gives_the_bucket() -> None:
    digest = hashlib.blake2b(b"user-7").digest()
    assert routing_key_hash("user-7") == digest[:8].hex()
    assert bucket(routing_key_hash("user-7")) == int.from_bytes(digest[:8], "big") / 2**64


def test_a_key_on_the_canary_stays_on_it_as_its_weight_grows() -> None:
    on_canary: set[str] = set()
    for weight in STEPS:
        table = canary_step(weight)
        now = {k for k in KEYS if table.choose(k).answer.version == 2}
        assert on_canary <= now, f"keys left the canary at {weight}"
        on_canary = now
    assert on_canary == set(KEYS)  # at 100 % the zero-weight primary answers nothing


@pytest.mark.parametrize("weight", STEPS[:-1])
def test_each_step_splits_by_its_weight(weight: float) -> None:
    hits = sum(canary_step(weight).choose(k).answer.version == 2 for k in KEYS)
    sigma = math.sqrt(len(KEYS) * weight * (1 - weight))
    assert abs(hits - len(KEYS) * weight) < 4 * sigma  # fixed keys: the same on every run


def test_canaries_own_the_low_buckets_in_ascending_version_order() -> None:
    table = RouteTable.of([Route(1, 0.5, PRIMARY), Route(5, 0.2, CANARY), Route(3, 0.3, CANARY)])
    assert [r.version for r in table.answering] == [3, 5, 1]
    for key in KEYS[:2000]:
        at = bucket(routing_key_hash(key))
        expected = 3 if at < 0.3 else (5 if at < 0.5 else 1)
        assert table.choose(key).answer.version == expected


def test_the_choice_carries_the_key_hash() -> None:
    choice = canary_step(0.25).choose("user-7")
    assert choice.key_hash == routing_key_hash("user-7")
    assert len(choice.key_hash) == 16 and int(choice.key_hash, 16) >= 0


def test_a_challenger_is_routed_and_never_answers() -> None:
    table = RouteTable.of([Route(1, 1.0, PRIMARY), Route(2, 0.0, CHALLENGER)])
    assert table.versions == (1, 2)
    assert [r.version for r in table.challengers] == [2]
    assert {table.choose(k).answer.version for k in KEYS[:3000]} == {1}
    assert all(not table.choose(k).shadows for k in KEYS[:100])


def test_blue_green_after_the_switch_the_old_primary_is_a_challenger() -> None:
    table = RouteTable.of([Route(2, 1.0, PRIMARY), Route(1, 0.0, CHALLENGER)])
    assert {table.choose(k).answer.version for k in KEYS[:3000]} == {2}
    assert table.route_for(1) == Route(1, 0.0, CHALLENGER)


def test_shadows_mirror_by_their_own_draw_whatever_answers() -> None:
    table = RouteTable.of([Route(1, 0.5, PRIMARY), Route(2, 0.5, CANARY), Route(3, 0.1, SHADOW)])
    mirrored = [c for c in map(table.choose, KEYS) if c.shadows]
    assert 0.09 < len(mirrored) / len(KEYS) < 0.11
    assert 0.45 < sum(c.answer.version == 2 for c in mirrored) / len(mirrored) < 0.55


def service_for(routes: list[R.Route]) -> InferenceService:
    versions = {
        r.version: ServedVersion(r.version, linear_model.LogisticRegression()) for r in routes
    }
    return InferenceService(make_cache(routes, versions), ListPublisher(), "gw", max_batch_rows=8)


def last_event(service: InferenceService):
    return service.publisher.events[-1][2]


CANARY_HALF = [
    R.Route(version=1, weight=0.5, role=R.ROUTE_ROLE_PRIMARY),
    R.Route(version=2, weight=0.5, role=R.ROUTE_ROLE_CANARY),
]


async def test_the_routing_key_parameter_wins_over_the_request_id() -> None:
    service = service_for(CANARY_HALF)
    answers = set()
    for i in range(40):
        req = request([1.0], request_id=f"req-{i}")  # a fresh id every time
        req.parameters["routing_key"].string_param = "user-7"
        response = await service.infer(req)
        answers.add(response.model_version)
        event = last_event(service)
        assert event.routing_key_hash == routing_key_hash("user-7")
        assert event.version == int(response.model_version)
        role = response.parameters["headwater_route_role"].string_param
        assert role == ("canary" if event.version == 2 else "primary")
        assert event.route_role == (R.ROUTE_ROLE_CANARY if event.version == 2 else PRIMARY)
    assert len(answers) == 1


async def test_without_a_routing_key_the_request_id_routes_else_a_fresh_one() -> None:
    service = service_for(CANARY_HALF)
    by_id = {
        (await service.infer(request([1.0], request_id="r-9"))).model_version for _ in range(20)
    }
    assert len(by_id) == 1
    event = last_event(service)
    assert event.routing_key_hash == routing_key_hash("r-9")
    fresh = {(await service.infer(request([1.0], request_id=""))).model_version for _ in range(60)}
    assert fresh == {"1", "2"}
    hashes = {e.routing_key_hash for _, _, e in service.publisher.events[-60:]}
    assert len(hashes) == 60 and all(len(h) == 16 for h in hashes)


async def test_a_routing_key_that_is_not_text_is_invalid_argument() -> None:
    service = service_for(CANARY_HALF)
    req = request([1.0])
    req.parameters["routing_key"].bool_param = True
    with pytest.raises(InvalidInput, match="parameter 'routing_key' must be a string"):
        await service.infer(req)
    req.parameters["routing_key"].int64_param = 42  # a numeric user id is a fine key
    await service.infer(req)
    assert last_event(service).routing_key_hash == routing_key_hash("42")


async def test_a_zero_weight_primary_answers_nothing_but_can_be_asked_for() -> None:
    routes = [
        R.Route(version=1, weight=0.0, role=R.ROUTE_ROLE_PRIMARY),
        R.Route(version=2, weight=1.0, role=R.ROUTE_ROLE_CANARY),
    ]
    service = service_for(routes)
    versions = {
        (await service.infer(request([1.0], request_id=f"r{i}"))).model_version for i in range(50)
    }
    assert versions == {"2"}
    asked = request([1.0])
    asked.model_version = "1"
    response = await service.infer(asked)
    assert response.parameters["headwater_route_role"].string_param == "primary"


async def test_a_challenger_answers_only_when_asked_for_by_version() -> None:
    routes = [
        R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY),
        R.Route(version=2, weight=0.0, role=R.ROUTE_ROLE_CHALLENGER),
    ]
    service = service_for(routes)
    versions = {
        (await service.infer(request([1.0], request_id=f"r{i}"))).model_version for i in range(50)
    }
    assert versions == {"1"}
    assert service.cache.ready("m", 2)  # loaded and ready: warm before a blue/green switch
    asked = request([1.0])
    asked.model_version = "2"
    response = await service.infer(asked)
    assert response.parameters["headwater_route_role"].string_param == "challenger"
    assert last_event(service).route_role == R.ROUTE_ROLE_CHALLENGER
