"""The registry's composition root: the relay's start-up, its health, a bounded stop."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headwater.services.registry.outbox import OutboxRelay
from headwater.services.registry.server import RegistryServer
from headwater.shared.bus.topics import Topic, ensure_topics
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, running_registry, unique_name
from tests.integration.registry.conftest import (
    FEATURES,
    SPEC,
    read_all_events,
    registry_settings,
    unpublished,
    wait_all_published,
)

pytestmark = pytest.mark.integration

Status = health_pb2.HealthCheckResponse


async def health_status(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return answer.status


async def test_an_existing_registry_events_topic_with_fewer_partitions_is_used(
    broker, database_url: str
) -> None:
    kafka = KafkaSettings(
        bootstrap=broker.bootstrap, topic_prefix=f"{unique_name()}.", partitions=2
    )
    await ensure_topics(kafka, [Topic.REGISTRY_EVENTS], partitions=1)  # made by an older setup
    async with running_registry(database_url, kafka) as server:
        async with RegistryClient(server.target, deadline_s=10) as client:
            await client.create_model("churn", "binary", FEATURES)
        await wait_all_published(database_url)
        assert await health_status(server.target) == Status.SERVING
    ((record, event),) = await read_all_events(kafka)
    assert (record.partition, event.model) == (0, "churn")


async def test_a_relay_that_dies_makes_the_registry_not_serving(
    database_url: str, kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: OutboxRelay) -> None:
        raise RuntimeError("a bug in the relay")

    monkeypatch.setattr(OutboxRelay, "run", broken)  # the fault: a bug, not an outage
    server = RegistryServer(registry_settings(database_url, kafka_settings))
    await server.start()
    try:

        async def not_serving() -> bool:
            return await health_status(server.target) == Status.NOT_SERVING

        await eventually(not_serving, timeout_s=10, what="health NOT_SERVING")
    finally:
        await server.stop(grace_s=1)


async def blocked_on_a_lock(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    finally:
        await conn.close()
    return waiting > 0


async def test_stop_finishes_within_the_grace_even_when_every_step_is_slow(
    broker, database_url: str, kafka_settings: KafkaSettings
) -> None:
    grace_s = 2.0
    server = RegistryServer(registry_settings(database_url, kafka_settings))
    await server.start()
    lock = await asyncpg.connect(database_url, timeout=10)
    request: asyncio.Task | None = None
    try:
        async with RegistryClient(server.target, deadline_s=30) as client:
            await client.create_model("churn", "binary", FEATURES)
            await wait_all_published(database_url)
            broker.pause()
            await client.create_version("churn", SPEC)  # the relay is now stuck sending it
            # An RPC that stays in flight: the model's row is locked by another transaction.
            tx = lock.transaction()
            await tx.start()
            await lock.execute("SELECT * FROM models WHERE name = 'churn' FOR UPDATE")
            request = asyncio.create_task(client.create_version("churn", SPEC))
            await eventually(
                lambda: blocked_on_a_lock(database_url), timeout_s=10, what="a blocked RPC"
            )
            started = time.monotonic()
            await server.stop(grace_s=grace_s)
            elapsed = time.monotonic() - started
            await tx.rollback()
            await asyncio.gather(request, return_exceptions=True)
    finally:
        broker.resume()
        await lock.close()
        await server.stop(grace_s=0)
    assert elapsed < grace_s + 1.5, f"stopped in {elapsed:.1f}s with a grace of {grace_s}s"
    assert await unpublished(database_url) >= 1  # kept for the next start
