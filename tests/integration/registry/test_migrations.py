"""Schema migrations on a real PostgreSQL: applied once, in order, idempotent."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from headwater.services.registry.migrate import apply_migrations, load_migrations
from headwater.services.registry.server import RegistryServer
from headwater.shared.errors import FailedPrecondition
from headwater.shared.settings import KafkaSettings
from tests.integration.registry.conftest import registry_settings

pytestmark = pytest.mark.integration

TABLES = {
    "aliases",
    "artifacts",
    "audit_log",
    "deployments",
    "evaluations",
    "models",
    "outbox",
    "replicas",
    "promotion_gates",
    "rollout_transitions",
    "rollouts",
    "schema_migrations",
    "versions",
}


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {row["table_name"] for row in rows}


async def test_migrations_applied_twice_is_a_no_op(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = await apply_migrations(conn)
        schema = await tables(conn)
        second = await apply_migrations(conn)

        assert first == [m.version for m in load_migrations()] and first[0] == 1
        assert second == []
        assert schema == await tables(conn) == TABLES
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
    finally:
        await conn.close()


async def test_concurrent_starts_apply_each_migration_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(apply_migrations(c) for c in conns))

        assert sorted(len(a) for a in applied) == [0, 0, len(load_migrations())]
    finally:
        for conn in conns:
            await conn.close()


async def test_an_edited_migration_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn)
        edited = [dataclasses.replace(m, sql=m.sql + "\n-- edited") for m in load_migrations()]

        with pytest.raises(FailedPrecondition, match="changed after it was applied"):
            await apply_migrations(conn, edited)
    finally:
        await conn.close()


async def test_a_restarted_server_keeps_its_data(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    from headwater.shared.registry_client import RegistryClient
    from tests.integration.registry.conftest import FEATURES

    for round_ in range(2):
        server = RegistryServer(registry_settings(database_url, kafka_settings))
        await server.start()
        try:
            async with RegistryClient(server.target) as client:
                if round_ == 0:
                    await client.create_model("churn", "binary", FEATURES)
                assert [m.name for m in await client.list_models()] == ["churn"]
        finally:
            await server.stop(grace_s=2)
