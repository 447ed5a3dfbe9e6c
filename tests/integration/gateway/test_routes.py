"""Several versions served at once on the real stack: loaded, split by sticky keys, shadowed."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest

from headwater.services.gateway.routing import routing_key_hash, uniform
from headwater.services.gateway.server import GatewayServer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import read_records
from tests.integration.gateway.conftest import MODEL, GatewayFactory
from tests.integration.gateway.versions import (
    CANARY,
    CHALLENGER,
    PRIMARY,
    SHADOW,
    answered_by,
    keyed_request,
    model_with_versions,
    prediction_ids,
    ready,
    route,
)

pytestmark = pytest.mark.integration
KEYS = [f"user-{i}" for i in range(120)]


@pytest.fixture
async def gateway(client: RegistryClient, start_gateway: GatewayFactory) -> GatewayServer:
    """A gateway serving MODEL, which has versions 1 to 4 (version 1 deployed)."""
    await model_with_versions(client, 4)
    return await start_gateway()


@pytest.fixture
async def stub(gateway: GatewayServer) -> AsyncIterator[oip_pb2_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        yield oip_pb2_grpc.GRPCInferenceServiceStub(channel)


async def test_every_routed_version_is_loaded_and_ready_and_only_answering_ones_answer(
    client: RegistryClient, gateway: GatewayServer, stub: oip_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    routes = ((1, 0.75, PRIMARY), (2, 0.25, CANARY), (3, 0.5, SHADOW), (4, 0.0, CHALLENGER))
    await route(client, gateway, *routes)
    assert sorted(gateway.cache.get(MODEL).versions) == [1, 2, 3, 4]
    for version in (1, 2, 3, 4):
        assert await ready(stub, version), version
    answers = await answered_by(stub, KEYS)
    assert set(answers.values()) == {1, 2}  # the shadow and the challenger never answer
    asked = keyed_request("user-1", model_version="4")  # by name, a challenger answers
    response = await stub.ModelInfer(asked, timeout=5)
    assert response.parameters["headwater_version"].int64_param == 4
    assert response.parameters["headwater_route_role"].string_param == "challenger"


async def test_answers_split_by_weight_and_a_key_sticks_to_its_version(
    client: RegistryClient, gateway: GatewayServer, stub: oip_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    await route(client, gateway, (1, 0.7, PRIMARY), (2, 0.3, CANARY))
    first = await answered_by(stub, KEYS)
    # the canary owns the low end of the bucket range: exactly the keys whose bucket is below 0.3
    assert first == {k: 2 if uniform(k) < 0.3 else 1 for k in KEYS}
    hits = sum(v == 2 for v in first.values())
    assert abs(hits - 0.3 * len(KEYS)) < 4 * math.sqrt(len(KEYS) * 0.3 * 0.7)
    assert await answered_by(stub, KEYS) == first  # sticky: the same key, the same version
    await route(client, gateway, (1, 0.4, PRIMARY), (2, 0.6, CANARY))
    grown = await answered_by(stub, KEYS)
    assert all(grown[k] == 2 for k, v in first.items() if v == 2)  # keys only ever join the canary
    assert sum(v == 2 for v in grown.values()) > hits
    await route(client, gateway, (1, 0.0, PRIMARY), (2, 1.0, CANARY))
    assert set((await answered_by(stub, KEYS)).values()) == {2}  # the 0-weight primary: nothing
    assert 1 in gateway.cache.get(MODEL).versions  # but it stays loaded


async def test_a_request_without_a_routing_key_is_routed_by_its_id(
    client: RegistryClient, gateway: GatewayServer, stub: oip_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    await route(client, gateway, (1, 0.5, PRIMARY), (2, 0.5, CANARY))
    for request_id in ("r-1", "r-2", "r-3", "r-4"):
        versions = set()
        for _ in range(5):
            request = keyed_request("", id=request_id)
            del request.parameters["routing_key"]
            response = await stub.ModelInfer(request, timeout=5)
            versions.add(response.parameters["headwater_version"].int64_param)
        assert versions == {2 if uniform(request_id) < 0.5 else 1}


async def test_shadow_events_on_predictions_name_the_answered_prediction_and_share_its_key(
    client: RegistryClient,
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    kafka_settings: KafkaSettings,
) -> None:
    await route(client, gateway, (1, 0.5, PRIMARY), (2, 0.5, CANARY), (3, 1.0, SHADOW))
    answered: dict[str, tuple[int, str]] = {}  # prediction id -> answering version, key
    for key in KEYS[:10]:
        response = await stub.ModelInfer(keyed_request(key, rows=2, id=f"req-{key}"), timeout=5)
        version = response.parameters["headwater_version"].int64_param
        assert version in (1, 2)
        # versions 1 and 3 answer True, 2 False: the shadow never changes version 2's answers
        assert list(response.outputs[0].contents.bool_contents) == [version == 1] * 2
        for prediction_id in prediction_ids(response):
            answered[prediction_id] = (version, key)
    records = await read_records(kafka_settings, Topic.PREDICTIONS, 2 * len(answered))
    events = [(r.key.decode(), events_pb2.PredictionEvent.FromString(r.value)) for r in records]
    shadows = {e.prediction_id: (k, e) for k, e in events if e.route_role == SHADOW}
    plain = {e.prediction_id: (k, e) for k, e in events if e.route_role != SHADOW}
    assert set(plain) == set(answered)
    assert set(shadows) == {f"{p}~v3" for p in answered}
    for prediction_id, (version, key) in answered.items():
        record_key, event = plain[prediction_id]
        assert (record_key, event.version) == (prediction_id, version)
        assert event.answered_prediction_id == ""
        assert event.route_role == (CANARY if version == 2 else PRIMARY)
        assert event.routing_key_hash == routing_key_hash(key)
        shadow_key, shadow = shadows[f"{prediction_id}~v3"]
        assert shadow_key == prediction_id  # the same key and partition as its feedback
        assert (shadow.version, shadow.answered_prediction_id) == (3, prediction_id)
        assert shadow.routing_key_hash == event.routing_key_hash
        assert shadow.request_id == f"req-{key}"
        assert shadow.prediction.bool_label is True
        assert dict(shadow.features) == dict(event.features)
