"""The gateway keeps answering through a broker outage and a registry crash."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from headwater.services.gateway.server import GatewayServer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import oip_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.faults.support import SERVING, GatewayAt, Spawn, read_to_end, registry_env
from tests.fixtures import eventually, free_port
from tests.integration.gateway.conftest import (
    FEATURES,
    MODEL,
    ROW,
    create_version,
    infer_request,
    prediction_ids,
    trained,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

OUTAGE_REQUESTS = 40
DROPPED = "headwater_gateway_prediction_events_dropped_total"


async def predict(stub: oip_pb2_grpc.GRPCInferenceServiceStub) -> oip_pb2.ModelInferResponse:
    """One request of two rows; answered within 2 s or the test fails."""
    return await stub.ModelInfer(infer_request([ROW, {**ROW, "plan": "pro"}]), timeout=2)


async def assert_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == SERVING, service
    stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
    assert (await stub.ServerReady(oip_pb2.ServerReadyRequest(), timeout=2)).ready


async def test_answers_while_the_broker_is_paused_and_delivers_every_event_after(
    broker,
    registry,
    client: RegistryClient,
    deployed,
    gateway_at: GatewayAt,
    kafka_settings: KafkaSettings,
) -> None:
    # a short request timeout, so sends time out and are retried during the outage
    kafka = kafka_settings.model_copy(update={"request_timeout_ms": 1_000})
    gateway = await gateway_at(registry.target, kafka=kafka)
    producer = gateway.producer
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        ids = prediction_ids(await predict(stub))
        await producer.flush(timeout_s=10)
        published_before = producer.published

        broker.pause()
        try:
            outage_ids: list[str] = []
            for _ in range(OUTAGE_REQUESTS):
                response = await predict(stub)
                assert response.model_version == "1"
                assert response.outputs[0].contents.bool_contents[0] is True
                outage_ids += prediction_ids(response)

            async def retrying() -> bool:
                return producer.retried > 0

            await eventually(retrying, timeout_s=15, what="a timed-out send being retried")
            assert producer.published == published_before  # nothing got through ...
            assert producer.buffered == len(outage_ids)  # ... and everything is held
            outage_ids += prediction_ids(await predict(stub))  # still answering while it retries
            await assert_serving(channel)
            # a deployment committed during the outage (its event cannot be published yet)
            await create_version(client, estimator=trained(False))
            await client.deploy(MODEL, 2)
            response = await predict(stub)
            assert response.model_version == "1"
            outage_ids += prediction_ids(response)
        finally:
            broker.resume()
        outage_ids += prediction_ids(await predict(stub))

        await producer.flush(timeout_s=30)
    assert (producer.failed, producer.dropped_buffer_full, gateway.service.events_dropped) == (
        0,
        0,
        0,
    )
    records = await read_to_end(kafka_settings, Topic.PREDICTIONS)
    keys = [r.key.decode() for r in records]
    # at least once: every event is there; a retried send may have landed twice
    assert set(keys) == set(ids + outage_ids)
    assert len(set(outage_ids)) == 2 * (OUTAGE_REQUESTS + 3)

    # the registry-events consumer came through the outage: the deployment is applied
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)

        async def served_v2() -> oip_pb2.ModelInferResponse | None:
            response = await predict(stub)
            return response if response.model_version == "2" else None

        after = await eventually(served_v2, timeout_s=20, what="the deployment made in the outage")
        assert after.outputs[0].contents.bool_contents[0] is False


async def test_answers_while_the_registry_is_killed_and_follows_it_after_its_restart(
    database_url: str, kafka_settings: KafkaSettings, spawn: Spawn, gateway_at: GatewayAt
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = registry_env(database_url, kafka_settings, port)
    registry = await spawn("registry", env)
    await registry.wait_grpc_serving(target)
    async with RegistryClient(target, deadline_s=10, actor="tester") as client:
        await client.create_model(MODEL, "binary", FEATURES)
        await create_version(client, estimator=trained(True))
        await client.deploy(MODEL, 1)
    gateway: GatewayServer = await gateway_at(target, reload_retry_max_s=1.0)
    assert gateway.ready.is_set() and gateway.cache.get(MODEL).routes.versions == (1,)

    registry.kill()
    assert await registry.wait_exit(timeout_s=10) == -9
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(OUTAGE_REQUESTS):
            response = await predict(stub)
            assert (response.model_version, response.outputs[0].contents.bool_contents[0]) == (
                "1",
                True,
            )
        metadata = await stub.ModelMetadata(oip_pb2.ModelMetadataRequest(name=MODEL), timeout=2)
        assert list(metadata.versions) == ["1"]
        await assert_serving(channel)

        restarted = await spawn("registry", env)
        await restarted.wait_grpc_serving(target)
        async with RegistryClient(target, deadline_s=10, actor="tester") as client:
            await create_version(client, estimator=trained(False))
            await client.deploy(MODEL, 2)

        async def served_v2() -> oip_pb2.ModelInferResponse | None:
            response = await predict(stub)
            return response if response.model_version == "2" else None

        after = await eventually(served_v2, timeout_s=20, what="version 2 served after restart")
        assert after.outputs[0].contents.bool_contents[0] is False
        await assert_serving(channel)


async def test_starts_and_answers_while_the_broker_is_paused(
    broker, registry, deployed, gateway_at: GatewayAt, kafka_settings: KafkaSettings
) -> None:
    kafka = kafka_settings.model_copy(update={"request_timeout_ms": 1_000})
    broker.pause()
    try:
        gateway = await gateway_at(registry.target, kafka=kafka)
        assert gateway.ready.is_set()  # loaded from the registry, no broker needed
        async with grpc.aio.insecure_channel(gateway.target) as channel:
            await assert_serving(channel)
            stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
            ids = [i for _ in range(10) for i in prediction_ids(await predict(stub))]
        assert gateway.producer.published == 0
    finally:
        broker.resume()
    await gateway.producer.flush(timeout_s=30)
    records = await read_to_end(kafka_settings, Topic.PREDICTIONS)
    assert {r.key.decode() for r in records} == set(ids)
    assert gateway.producer.failed == 0


async def test_a_full_event_buffer_drops_are_counted_and_the_rest_delivered(
    broker, registry, deployed, gateway_at: GatewayAt, kafka_settings: KafkaSettings
) -> None:
    buffer = 12
    kafka = kafka_settings.model_copy(
        update={"request_timeout_ms": 1_000, "producer_buffer_max_events": buffer}
    )
    gateway = await gateway_at(registry.target, kafka=kafka)
    labels = {"model": MODEL, "reason": "buffer_full"}
    dropped_before = REGISTRY.get_sample_value(DROPPED, labels) or 0.0
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        broker.pause()
        try:
            ids: list[str] = []
            for _ in range(10):  # 20 rows, 12 fit in the buffer
                response = await predict(stub)
                assert response.model_version == "1"  # answered all the same
                ids += prediction_ids(response)
        finally:
            broker.resume()
        await gateway.producer.flush(timeout_s=30)
    dropped = gateway.service.events_dropped
    held = len(ids) - dropped  # the buffer, plus the batch the sender had already taken
    assert buffer <= held < len(ids)
    # the producer counts each refused publish; the gateway also the rows it then did not try
    assert 1 <= gateway.producer.dropped_buffer_full <= dropped
    assert (REGISTRY.get_sample_value(DROPPED, labels) or 0.0) - dropped_before == dropped
    records = await read_to_end(kafka_settings, Topic.PREDICTIONS)
    assert {r.key.decode() for r in records} == set(ids[:held])  # the first ones, none lost
    assert gateway.producer.failed == 0
