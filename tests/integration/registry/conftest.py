"""Helpers of the registry tests (fixtures ``registry`` and ``client``: tests/conftest.py)."""

from __future__ import annotations

import asyncpg
from aiokafka.structs import ConsumerRecord

from headwater.shared.bus.consumer import assign_all_partitions
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually
from tests.fixtures import registry_settings as registry_settings  # the tests import it here

SPEC = (
    '{"pipeline": [{"component": "preprocessing.StandardScaler"},'
    ' {"component": "linear_model.LogisticRegression",'
    ' "params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.05}}}}]}'
)
FEATURES = [("x1", "float"), ("x2", "float"), ("plan", "str", False)]


async def two_versions_deployed(client: RegistryClient, model: str = "churn") -> None:
    """A model with versions 1 and 2, version 1 deployed alone."""
    await client.create_model(model, "binary", FEATURES)
    await client.create_version(model, SPEC)
    await client.create_version(model, SPEC)
    await client.deploy(model, 1)


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
