"""SIGTERM to a gateway process holding prediction events it could not send yet."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headwater.services.registry.server import RegistryServer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import oip_pb2_grpc
from headwater.shared.settings import KafkaSettings
from tests.faults.support import SERVING, Spawn, kafka_env, read_to_end, scrape
from tests.fixtures import eventually, free_port, unique_name
from tests.integration.gateway.conftest import ROW, infer_request

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GRACE_S = 10.0
REQUESTS = 25


async def test_sigterm_flushes_buffered_prediction_events_and_exits_0_within_the_grace(
    broker, registry: RegistryServer, deployed, kafka_settings: KafkaSettings, spawn: Spawn
) -> None:
    port, metrics_port = free_port(), free_port()
    gateway_id = unique_name("gw")
    target = f"127.0.0.1:{port}"
    gateway = await spawn(
        "gateway",
        {
            **kafka_env(kafka_settings, request_timeout_ms=1_000),
            "HEADWATER_GATEWAY_PORT": str(port),
            "HEADWATER_GATEWAY_METRICS_PORT": str(metrics_port),
            "HEADWATER_REGISTRY_TARGET": registry.target,
            "HEADWATER_GATEWAY_GATEWAY_ID": gateway_id,
            "HEADWATER_GATEWAY_SHUTDOWN_GRACE_S": str(GRACE_S),
        },
    )
    await gateway.wait_grpc_serving(target)
    buffered = ("headwater_bus_buffered_events", (("client_id", f"gateway-{gateway_id}"),))

    async def buffered_now() -> float:
        return (await scrape(metrics_port)).get(buffered, 0.0)

    ids: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        broker.pause()
        try:
            for _ in range(REQUESTS):
                response = await stub.ModelInfer(infer_request([ROW, ROW]), timeout=2)
                ids += response.parameters["prediction_ids"].string_param.split(",")
            assert await buffered_now() == len(ids)  # held: the broker does not answer

            started = time.monotonic()
            gateway.terminate()
            health = health_pb2_grpc.HealthStub(channel)

            async def shutting_down() -> bool:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return True
                return reply.status != SERVING

            # the stop has begun while the events are still held
            await eventually(shutting_down, timeout_s=5, what="the gateway shutting down")
        finally:
            broker.resume()
    code = await gateway.wait_exit(timeout_s=GRACE_S + 10)
    elapsed = time.monotonic() - started
    log = gateway.log_tail(20_000)
    assert code == 0, log
    assert elapsed < GRACE_S + 5, f"stopped in {elapsed:.1f}s with a grace of {GRACE_S}s"
    assert "events not delivered before stop" not in log

    records = await read_to_end(kafka_settings, Topic.PREDICTIONS)
    assert {r.key.decode() for r in records} == set(ids)
    assert len(set(ids)) == 2 * REQUESTS


async def test_sigterm_while_the_registry_is_unreachable_at_start_exits_within_the_grace(
    kafka_settings: KafkaSettings, spawn: Spawn
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    gateway = await spawn(
        "gateway",
        {
            **kafka_env(kafka_settings),
            "HEADWATER_GATEWAY_PORT": str(port),
            "HEADWATER_GATEWAY_METRICS_PORT": "0",
            "HEADWATER_REGISTRY_TARGET": f"127.0.0.1:{free_port()}",  # nobody there
            "HEADWATER_GATEWAY_SHUTDOWN_GRACE_S": "3",
        },
    )
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def not_serving_yet() -> bool:  # the port answers; start() is still waiting
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

        await eventually(not_serving_yet, timeout_s=30, interval_s=0.2, what="NOT_SERVING")
    gateway.terminate()
    assert await gateway.wait_exit(timeout_s=3 + 5) == 0
