"""Live mode per version on the real stack: each routed version swaps in its own learner's state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from headwater.services.gateway.server import GatewayServer
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually
from tests.integration.gateway.conftest import CODEC, MODEL, GatewayFactory, trained
from tests.integration.gateway.versions import (
    CANARY,
    CHALLENGER,
    PRIMARY,
    SHADOW,
    keyed_request,
    model_with_versions,
    route,
)
from tests.signed_updates import signed_update

pytestmark = pytest.mark.integration


@pytest.fixture
async def learners(kafka_settings: KafkaSettings) -> AsyncIterator[EventProducer]:
    """Publishes ModelUpdates as the trainer's learners do."""
    producer = EventProducer(kafka_settings, client_id="test-learners")
    await producer.start()
    yield producer
    await producer.stop(grace_s=2)


def live_sequences(gateway: GatewayServer) -> dict[int, int]:
    return {v: s.live_sequence for v, s in gateway.cache.get(MODEL).versions.items()}


async def test_each_routed_version_serves_its_own_learners_updates_whatever_the_record_key(
    client: RegistryClient, start_gateway: GatewayFactory, learners: EventProducer
) -> None:
    await model_with_versions(client, 4)
    gateway = await start_gateway()
    routes = ((1, 0.5, PRIMARY), (2, 0.5, CANARY), (3, 1.0, SHADOW), (4, 0.0, CHALLENGER))
    await route(client, gateway, *routes)
    # one learner per version, each its own sequence; versions 1 and 3 flip to False
    published = {1: (7, False), 2: (3, True), 3: (40, False), 4: (1, True)}
    for version, (sequence, positive) in published.items():
        update = signed_update(CODEC, trained(positive), MODEL, version, sequence)
        await learners.send_and_wait(Topic.MODEL_UPDATES, f"{MODEL}/{version}", update)
    # an older trainer keys by model name: only the signed fields count
    legacy = signed_update(CODEC, trained(True), MODEL, 4, 2)
    await learners.send_and_wait(Topic.MODEL_UPDATES, MODEL, legacy)
    expected = {1: 7, 2: 3, 3: 40, 4: 2}

    async def applied() -> bool:
        return live_sequences(gateway) == expected

    await eventually(applied, timeout_s=15, what=f"live sequences {expected}")
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        for version, sequence in expected.items():
            request = keyed_request("user-1", model_version=str(version))
            response = await stub.ModelInfer(request, timeout=5)
            assert response.parameters["live_sequence"].int64_param == sequence
            assert response.outputs[0].contents.bool_contents[0] is published[version][1]


async def test_updates_of_versions_routed_later_are_applied_when_their_routes_appear(
    client: RegistryClient, start_gateway: GatewayFactory, learners: EventProducer
) -> None:
    await model_with_versions(client, 3)
    gateway = await start_gateway()
    for version, sequence in ((2, 5), (3, 9)):  # learners ahead of this gateway's deployment
        update = signed_update(CODEC, trained(False), MODEL, version, sequence)
        await learners.send_and_wait(Topic.MODEL_UPDATES, f"{MODEL}/{version}", update)

    async def remembered() -> bool:
        return {u.base_version for u in gateway.cache.pending_updates(MODEL)} == {2, 3}

    await eventually(remembered, timeout_s=15, what="updates remembered")
    await route(client, gateway, (1, 0.9, PRIMARY), (2, 0.1, CANARY), (3, 0.2, SHADOW))

    async def applied() -> bool:
        return live_sequences(gateway) == {1: 0, 2: 5, 3: 9}

    await eventually(applied, timeout_s=15, what="remembered updates applied on install")
