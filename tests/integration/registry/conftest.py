"""A registry server per test on a fresh database and fresh topics, plus helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka.structs import ConsumerRecord

from headwater.services.registry.server import RegistryServer
from headwater.services.registry.settings import RegistrySettings
from headwater.shared.bus.consumer import assign_all_partitions
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import DatabaseSettings, KafkaSettings
from tests.fixtures import eventually

SPEC = (
    '{"pipeline": [{"component": "preprocessing.StandardScaler"},'
    ' {"component": "linear_model.LogisticRegression",'
    ' "params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.05}}}}]}'
)
FEATURES = [("x1", "float"), ("x2", "float"), ("plan", "str", False)]


def registry_settings(database_url: str, kafka: KafkaSettings, **overrides) -> RegistrySettings:
    """Settings of a test registry: free port, no metrics endpoint, fast polling."""
    values = {
        "port": 0,
        "metrics_port": 0,
        "outbox_poll_interval_ms": 100,
        "outbox_retry_max_backoff_ms": 300,
        "database": DatabaseSettings(url=database_url, pool_max_size=5),
        "kafka": kafka,
        **overrides,
    }
    return RegistrySettings(**values)


@pytest.fixture
async def registry(
    database_url: str, kafka_settings: KafkaSettings
) -> AsyncIterator[RegistryServer]:
    """A started registry server; stopped after the test."""
    server = RegistryServer(registry_settings(database_url, kafka_settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=2)


@pytest.fixture
async def client(registry: RegistryServer) -> AsyncIterator[RegistryClient]:
    """A client of the test registry, acting as ``tester``."""
    async with RegistryClient(registry.target, deadline_s=10, actor="tester") as registry_client:
        yield registry_client


async def unpublished(database_url: str) -> int:
    """Outbox rows the relay has not published yet."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    finally:
        await conn.close()


async def outbox_sequences(database_url: str) -> list[int]:
    """Every outbox sequence number, in order."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch("SELECT sequence FROM outbox ORDER BY sequence")
        return [row["sequence"] for row in rows]
    finally:
        await conn.close()


async def wait_all_published(database_url: str, timeout_s: float = 20.0) -> None:
    """Wait until the relay has published every outbox row."""

    async def probe() -> bool:
        return await unpublished(database_url) == 0

    await eventually(probe, timeout_s=timeout_s, what="every outbox row published")


async def read_all_events(
    kafka: KafkaSettings,
) -> list[tuple[ConsumerRecord, events_pb2.RegistryEvent]]:
    """Every record of registry-events up to the current end offsets (exactly those).

    Call once the relay has published everything: the end offsets then bound
    exactly what was written, so duplicates and losses both show.
    """
    assigned = await assign_all_partitions(kafka, [Topic.REGISTRY_EVENTS], from_beginning=True)
    consumer, partitions, ends = assigned.consumer, assigned.partitions, assigned.end_offsets
    records: list[ConsumerRecord] = []
    try:

        async def caught_up() -> bool:
            batch = await consumer.getmany(*partitions, timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            positions = [await consumer.position(tp) for tp in partitions]
            return all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True))

        await eventually(caught_up, timeout_s=15, interval_s=0, what="registry-events read")
    finally:
        await consumer.stop()
    return [(r, events_pb2.RegistryEvent.FromString(r.value)) for r in records]
