"""Fixtures every integration test shares: a real broker and a real PostgreSQL.

- ``broker`` (session): a started Tansu broker (``.bootstrap``, ``.pause()``,
  ``.resume()``, ``.pid``), or the external one in ``HEADWATER_TEST_KAFKA_BOOTSTRAP``.
- ``postgres_server`` (session): embedded PostgreSQL on 127.0.0.1 (``.url(db)``),
  or the external one in ``HEADWATER_TEST_DATABASE_URL``.
- ``database_url`` (function): DSN of a fresh, empty database, dropped afterwards.
- ``kafka_settings`` (function): KafkaSettings with a unique topic prefix and
  every headwater topic created (2 partitions each).
- ``registry`` (function): a started registry server on ``database_url`` and
  ``kafka_settings`` (``.target``); ``client``: a RegistryClient of it acting
  as ``tester``. Other settings: ``tests.fixtures.running_registry``.

The servers start only when a test asks for them, so unit tests never pay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import asyncpg
import pytest

from headwater.cli.localstack import EmbeddedPostgres, TansuBroker
from headwater.shared.bus.topics import ensure_topics
from headwater.shared.settings import KafkaSettings
from tests.fixtures import (
    ExternalBroker,
    ExternalPostgres,
    admin_url,
    running_registry,
    start_broker,
    start_postgres,
    unique_name,
)

if TYPE_CHECKING:  # imported when used: unit tests do not pay for the registry
    from headwater.services.registry.server import RegistryServer
    from headwater.shared.registry_client import RegistryClient

TEST_PARTITIONS = 2


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> TansuBroker | ExternalBroker:
    """A Kafka-compatible broker for the whole session."""
    return start_broker(request)


@pytest.fixture(autouse=True)
def _broker_resumed_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that paused the broker and failed must not leave it paused for the rest."""
    if "broker" not in request.fixturenames:
        yield
        return
    server = request.getfixturevalue("broker")
    yield
    server.resume()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> EmbeddedPostgres | ExternalPostgres:
    """A PostgreSQL server for the whole session."""
    return start_postgres(request)


@pytest.fixture
async def database_url(
    postgres_server: EmbeddedPostgres | ExternalPostgres,
) -> AsyncIterator[str]:
    """A fresh, empty database; dropped after the test (connections forced out)."""
    name = unique_name("t")
    admin = admin_url(postgres_server)
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=30)
    finally:
        await conn.close(timeout=5)
    yield postgres_server.url(name)
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
    finally:
        await conn.close(timeout=5)


@pytest.fixture
async def kafka_settings(broker: TansuBroker | ExternalBroker) -> KafkaSettings:
    """KafkaSettings with a topic prefix of this test's own, every topic created."""
    settings = KafkaSettings(
        bootstrap=broker.bootstrap,
        topic_prefix=f"{unique_name('t')}.",
        partitions=TEST_PARTITIONS,
        request_timeout_ms=5_000,
    )
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def registry(
    database_url: str, kafka_settings: KafkaSettings
) -> AsyncIterator[RegistryServer]:
    """A started registry server on this test's database and topics; stopped afterwards."""
    async with running_registry(database_url, kafka_settings) as server:
        yield server


@pytest.fixture
async def client(registry: RegistryServer) -> AsyncIterator[RegistryClient]:
    """A client of the test registry, acting as ``tester``."""
    from headwater.shared.registry_client import RegistryClient

    async with RegistryClient(registry.target, deadline_s=10, actor="tester") as registry_client:
        yield registry_client
