"""Helpers behind the shared test fixtures (see conftest.py).

Set ``HEADWATER_TEST_KAFKA_BOOTSTRAP`` or ``HEADWATER_TEST_DATABASE_URL`` to run
the integration tests against servers of your own instead of the embedded ones.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headwater.cli.localstack import EmbeddedPostgres, TansuBroker, free_port
from headwater.shared.bus.consumer import assign_all_partitions
from headwater.shared.bus.topics import Topic
from headwater.shared.settings import KafkaSettings

if TYPE_CHECKING:  # imported when used: unit tests do not pay for the registry
    from headwater.services.registry.server import RegistryServer
    from headwater.services.registry.settings import RegistrySettings

T = TypeVar("T")

#: ``(topic, key, value, headers)`` of a record a test produces (a str key is UTF-8 encoded).
ProducedRecord = tuple[Topic, str | bytes, bytes | None, Sequence[tuple[str, bytes | None]]]

__all__ = [
    "ExternalBroker",
    "ExternalPostgres",
    "ProducedRecord",
    "TestStackSettings",
    "admin_url",
    "assigned_consumer",
    "eventually",
    "free_port",
    "produce_records",
    "prometheus_samples",
    "read_records",
    "registry_settings",
    "running_registry",
    "start_broker",
    "start_postgres",
    "unique_name",
    "with_database",
]


class TestStackSettings(BaseSettings):
    """Where the integration tests find their servers (empty: start embedded ones)."""

    __test__ = False  # not a test class, despite the name

    model_config = SettingsConfigDict(env_prefix="HEADWATER_TEST_", frozen=True)

    kafka_bootstrap: str = Field("", description="host:port of an external broker.")
    database_url: str = Field(
        "", description="DSN of an external PostgreSQL; its database is the admin database."
    )


def unique_name(prefix: str = "t") -> str:
    """A short name no other test uses (``t3f2a9c01``)."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def with_database(url: str, database: str) -> str:
    """The same DSN pointing at another database.

    >>> with_database("postgresql://u:p@h:5432/admin?sslmode=disable", "t1")
    'postgresql://u:p@h:5432/t1?sslmode=disable'
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


class ExternalBroker:
    """A broker the tests did not start: it cannot be paused or stopped."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.pid: int | None = None

    def pause(self) -> None:
        pytest.skip("the broker is external (HEADWATER_TEST_KAFKA_BOOTSTRAP): cannot pause it")

    def resume(self) -> None:
        pass

    def is_running(self) -> bool:
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        pass


class ExternalPostgres:
    """A PostgreSQL server the tests did not start."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.pid: int | None = None

    def url(self, database: str = "headwater") -> str:
        return with_database(self.admin_url, database)

    def is_running(self) -> bool:
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        pass


def admin_url(server: EmbeddedPostgres | ExternalPostgres) -> str:
    """Where to run CREATE/DROP DATABASE: the external URL as given, else ``postgres``."""
    if isinstance(server, ExternalPostgres):
        return server.admin_url
    return server.url("postgres")


def start_broker(request: pytest.FixtureRequest) -> TansuBroker | ExternalBroker:
    """The session's broker: external when configured, else a Tansu child process."""
    settings = TestStackSettings()
    if settings.kafka_bootstrap:
        return ExternalBroker(settings.kafka_bootstrap)
    log_dir = Path(tempfile.mkdtemp(prefix="hw-tansu-"))
    broker = TansuBroker(log_path=log_dir / "tansu.log")
    request.addfinalizer(lambda: shutil.rmtree(log_dir, ignore_errors=True))
    request.addfinalizer(broker.stop)  # registered before start: runs even if start fails
    broker.start()
    return broker


def start_postgres(request: pytest.FixtureRequest) -> EmbeddedPostgres | ExternalPostgres:
    """The session's PostgreSQL: external when configured, else an embedded server.

    The data lives in a fresh directory outside pytest's tmp tree, whose
    permissions pytest resets (the server runs as another user when root).
    """
    settings = TestStackSettings()
    if settings.database_url:
        return ExternalPostgres(settings.database_url)
    root = Path(tempfile.mkdtemp(prefix="hw-pg-"))
    server = EmbeddedPostgres(root / "data", die_with_parent=True)
    request.addfinalizer(lambda: shutil.rmtree(root, ignore_errors=True))
    request.addfinalizer(server.stop)
    server.start()
    return server


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """Await ``probe()`` until it returns something truthy; fail the test after ``timeout_s``.

    Returns:
        The first truthy value ``probe`` returned.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} not reached within {timeout_s}s")
        await asyncio.sleep(interval_s)


@asynccontextmanager
async def assigned_consumer(
    kafka: KafkaSettings, topic: Topic
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A started group-less consumer assigned every partition of ``topic``, from the beginning.

    :func:`~headwater.shared.bus.consumer.assign_all_partitions`: no group join
    (seconds on Tansu), the partitions asked of the broker; stopped on exit.
    """
    assigned = await assign_all_partitions(
        kafka, [topic], from_beginning=True, client_id="headwater-test-reader"
    )
    try:
        yield assigned.consumer, list(assigned.partitions)
    finally:
        await assigned.consumer.stop()


async def read_records(
    kafka: KafkaSettings,
    topic: Topic,
    count: int,
    timeout_s: float = 15.0,
) -> list[ConsumerRecord]:
    """Read at least ``count`` records of ``topic`` from the beginning (no consumer group).

    Fails the test if fewer arrive within ``timeout_s``.
    """
    records: list[ConsumerRecord] = []
    async with assigned_consumer(kafka, topic) as (consumer, _):
        deadline = time.monotonic() + timeout_s
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    if len(records) < count:
        name = kafka.topic(topic.value)
        pytest.fail(f"read {len(records)} of {count} records from {name} in {timeout_s}s")
    return records


async def produce_records(
    kafka: KafkaSettings, records: Iterable[ProducedRecord], *, one_at_a_time: bool = False
) -> None:
    """Send records as any Kafka producer would (plain aiokafka, ``acks=all``); wait for every ack.

    Records of one partition keep their order either way; ``one_at_a_time``
    waits for each ack before sending the next, so the broker also has them in
    this order across topics and partitions.
    """
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        acks = []
        for topic, key, value, headers in records:
            ack = await producer.send(
                kafka.topic(topic.value),
                value,
                key=key if isinstance(key, bytes) else key.encode(),
                headers=list(headers),
            )
            if one_at_a_time:
                await ack
            acks.append(ack)
        for ack in acks:
            await ack
    finally:
        await producer.stop()


def prometheus_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a Prometheus text exposition: (name, sorted labels) -> value.

    >>> prometheus_samples('# TYPE up gauge\\nup{job="a"} 0.5\\n')
    {('up', (('job', 'a'),)): 0.5}
    """
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def registry_settings(
    database_url: str, kafka: KafkaSettings, **overrides: Any
) -> RegistrySettings:
    """Settings of a test registry: free port, no metrics endpoint, fast outbox polling."""
    from headwater.services.registry.settings import RegistrySettings
    from headwater.shared.settings import DatabaseSettings

    values: dict[str, Any] = {
        "port": 0,
        "metrics_port": 0,
        "outbox_poll_interval_ms": 50,
        "outbox_retry_max_backoff_ms": 300,
        "database": DatabaseSettings(url=database_url, pool_max_size=5),
        "kafka": kafka,
        **overrides,
    }
    return RegistrySettings(**values)


@asynccontextmanager
async def running_registry(
    database_url: str, kafka: KafkaSettings, **overrides: Any
) -> AsyncIterator[RegistryServer]:
    """A started registry server (see :func:`registry_settings`), stopped on exit."""
    from headwater.services.registry.server import RegistryServer

    server = RegistryServer(registry_settings(database_url, kafka, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s=2)
