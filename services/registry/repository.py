"""Every SQL statement of the registry, over asyncpg.

Functions take a connection so that the caller (:mod:`.service`) decides
what one transaction holds. Rows come back as asyncpg records; jsonb
columns are decoded to Python values by the codec :func:`init_connection`
installs on every pooled connection.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

# Transaction-level advisory lock taken by every writer just before it draws an
# outbox sequence number: sequence order is then commit order. "hw-outbx".
OUTBOX_WRITE_LOCK_KEY = 0x68772D6F757462
# Session-level advisory lock held by the one active outbox relay. "hw-relay".
OUTBOX_RELAY_LOCK_KEY = 0x68772D72656C6179
OUTBOX_CHANNEL = "headwater_registry_outbox"

Row: TypeAlias = asyncpg.Record


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode and encode jsonb columns as Python values."""
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


# --- models -------------------------------------------------------------------------


async def insert_model(
    conn: asyncpg.Connection,
    name: str,
    task: str,
    features: list[dict[str, Any]],
    description: str,
    tags: dict[str, str],
) -> Row | None:
    """Insert a model; None when the name is taken."""
    return await conn.fetchrow(
        "INSERT INTO models (name, task, features, description, tags)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING *",
        name,
        task,
        features,
        description,
        tags,
    )


async def fetch_model(conn: asyncpg.Connection, name: str) -> Row | None:
    """One model row, or None."""
    return await conn.fetchrow("SELECT * FROM models WHERE name = $1", name)


async def fetch_models(conn: asyncpg.Connection) -> list[Row]:
    """Every model row, by name."""
    return list(await conn.fetch("SELECT * FROM models ORDER BY name"))


async def next_version_number(conn: asyncpg.Connection, model: str) -> Row | None:
    """Bump and return the model's version counter (row-locked until commit); None: no model."""
    return await conn.fetchrow(
        "UPDATE models SET latest_version = latest_version + 1 WHERE name = $1"
        " RETURNING latest_version, task",
        model,
    )


# --- aliases ---------------------------------------------------------------------------


async def fetch_aliases(conn: asyncpg.Connection, model: str) -> dict[str, int]:
    """Alias name -> version of one model."""
    rows = await conn.fetch("SELECT alias, version FROM aliases WHERE model = $1", model)
    return {row["alias"]: row["version"] for row in rows}


async def fetch_all_aliases(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Model -> alias name -> version, for every model."""
    aliases: dict[str, dict[str, int]] = {}
    for row in await conn.fetch("SELECT model, alias, version FROM aliases"):
        aliases.setdefault(row["model"], {})[row["alias"]] = row["version"]
    return aliases


async def resolve_alias(conn: asyncpg.Connection, model: str, alias: str) -> int | None:
    """The version an alias points to, or None."""
    version: int | None = await conn.fetchval(
        "SELECT version FROM aliases WHERE model = $1 AND alias = $2", model, alias
    )
    return version


async def upsert_alias(conn: asyncpg.Connection, model: str, alias: str, version: int) -> None:
    """Point an alias at a version, creating it when new."""
    await conn.execute(
        "INSERT INTO aliases (model, alias, version) VALUES ($1, $2, $3)"
        " ON CONFLICT (model, alias) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
        model,
        alias,
        version,
    )


async def delete_alias(conn: asyncpg.Connection, model: str, alias: str) -> int | None:
    """Delete an alias; return the version it pointed to, or None when there was none."""
    version: int | None = await conn.fetchval(
        "DELETE FROM aliases WHERE model = $1 AND alias = $2 RETURNING version", model, alias
    )
    return version


# --- versions and artifacts ------------------------------------------------------------


async def insert_artifact(conn: asyncpg.Connection, sha256: str, content: bytes) -> None:
    """Store artifact bytes once per digest (content-addressed, deduplicated)."""
    await conn.execute(
        "INSERT INTO artifacts (sha256, content, size_bytes) VALUES ($1, $2, $3)"
        " ON CONFLICT (sha256) DO NOTHING",
        sha256,
        content,
        len(content),
    )


async def fetch_artifact_content(conn: asyncpg.Connection, sha256: str) -> bytes | None:
    """The bytes of an artifact, or None."""
    content: bytes | None = await conn.fetchval(
        "SELECT content FROM artifacts WHERE sha256 = $1", sha256
    )
    return content


@dataclass(frozen=True)
class VersionRow:
    """The columns of a new ``versions`` row, in insert order (``created_at`` defaults).

    jsonb columns (``offsets``, ``metrics``, ``tags``) hold Python values.
    """

    model: str
    version: int
    spec_json: str
    parent_version: int
    source: str
    offsets: list[dict[str, Any]]
    example_count: int
    metrics: dict[str, float]
    seed: int
    artifact_sha256: str
    artifact_signature: str
    artifact_format: str
    artifact_size_bytes: int
    description: str
    tags: dict[str, str]


VERSION_INSERT_COLUMNS = (
    "model",
    "version",
    "spec_json",
    "parent_version",
    "source",
    "offsets",
    "example_count",
    "metrics",
    "seed",
    "artifact_sha256",
    "artifact_signature",
    "artifact_format",
    "artifact_size_bytes",
    "description",
    "tags",
)
INSERT_VERSION_SQL = (
    "INSERT INTO versions (model, version, spec_json, parent_version, source, offsets,"
    " example_count, metrics, seed, artifact_sha256, artifact_signature, artifact_format,"
    " artifact_size_bytes, description, tags)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING *"
)


def version_values(row: VersionRow) -> tuple[Any, ...]:
    """The arguments of :data:`INSERT_VERSION_SQL` (:data:`VERSION_INSERT_COLUMNS` order)."""
    return tuple(getattr(row, column) for column in VERSION_INSERT_COLUMNS)


async def insert_version(conn: asyncpg.Connection, row: VersionRow) -> Row:
    """Insert a versions row; return it as stored."""
    stored = await conn.fetchrow(INSERT_VERSION_SQL, *version_values(row))
    assert stored is not None
    return stored


async def fetch_version(conn: asyncpg.Connection, model: str, version: int) -> Row | None:
    """One version row, or None."""
    return await conn.fetchrow(
        "SELECT * FROM versions WHERE model = $1 AND version = $2", model, version
    )


async def fetch_versions(conn: asyncpg.Connection, model: str) -> list[Row]:
    """Every version of a model, oldest first."""
    return list(await conn.fetch("SELECT * FROM versions WHERE model = $1 ORDER BY version", model))


async def version_numbers(conn: asyncpg.Connection, model: str) -> set[int]:
    """The version numbers a model has."""
    rows = await conn.fetch("SELECT version FROM versions WHERE model = $1", model)
    return {row["version"] for row in rows}


# --- deployments -------------------------------------------------------------------------


async def upsert_deployment(
    conn: asyncpg.Connection,
    model: str,
    routes: list[dict[str, Any]],
    mode: str,
    strategy: str,
) -> Row:
    """Set a model's deployment; its revision grows by one with every change."""
    row = await conn.fetchrow(
        "INSERT INTO deployments (model, routes, mode, strategy, revision)"
        " VALUES ($1, $2, $3, $4, 1) ON CONFLICT (model) DO UPDATE SET"
        " routes = EXCLUDED.routes, mode = EXCLUDED.mode, strategy = EXCLUDED.strategy,"
        " revision = deployments.revision + 1, updated_at = now() RETURNING *",
        model,
        routes,
        mode,
        strategy,
    )
    assert row is not None
    return row


async def lock_deployment(conn: asyncpg.Connection, model: str) -> Row | None:
    """A model's deployment, row-locked until commit (rollouts and SetDeployment queue here)."""
    return await conn.fetchrow("SELECT * FROM deployments WHERE model = $1 FOR UPDATE", model)


async def fetch_deployment(conn: asyncpg.Connection, model: str) -> Row | None:
    """A model's deployment, or None."""
    return await conn.fetchrow("SELECT * FROM deployments WHERE model = $1", model)


async def fetch_deployments(conn: asyncpg.Connection) -> list[Row]:
    """Every deployment, by model."""
    return list(await conn.fetch("SELECT * FROM deployments ORDER BY model"))


# --- audit -------------------------------------------------------------------------------


async def insert_audit(
    conn: asyncpg.Connection, actor: str, action: str, model: str, detail: dict[str, Any]
) -> None:
    """Append one audit entry."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, model, detail) VALUES ($1, $2, $3, $4)",
        actor,
        action,
        model,
        detail,
    )


async def fetch_audit(conn: asyncpg.Connection, model: str, limit: int) -> list[Row]:
    """The newest ``limit`` audit entries, newest first, of one model ('' for all)."""
    if model:
        query = "SELECT * FROM audit_log WHERE model = $1 ORDER BY id DESC LIMIT $2"
        return list(await conn.fetch(query, model, limit))
    return list(await conn.fetch("SELECT * FROM audit_log ORDER BY id DESC LIMIT $1", limit))


# --- outbox ------------------------------------------------------------------------------


async def next_outbox_sequence(conn: asyncpg.Connection) -> int:
    """Serialize writers until commit, then draw the next outbox sequence number.

    Must run inside the writer's transaction, after its other statements:
    holding the lock until commit makes sequence order equal commit order.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_WRITE_LOCK_KEY)
    sequence: int = await conn.fetchval(
        "SELECT nextval(pg_get_serial_sequence('outbox', 'sequence'))"
    )
    return sequence


async def insert_outbox(
    conn: asyncpg.Connection,
    sequence: int,
    key: str,
    event: bytes,
    headers: Sequence[tuple[str, str]],
) -> None:
    """Write one event to the outbox and notify listening relays at commit."""
    await conn.execute(
        "INSERT INTO outbox (sequence, key, event, headers) VALUES ($1, $2, $3, $4)",
        sequence,
        key,
        event,
        [list(pair) for pair in headers],
    )
    await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")


async def fetch_unpublished(conn: asyncpg.Connection, limit: int) -> list[Row]:
    """The oldest unpublished outbox rows, in sequence order."""
    return list(
        await conn.fetch(
            "SELECT sequence, key, event, headers, created_at FROM outbox"
            " WHERE published_at IS NULL ORDER BY sequence LIMIT $1",
            limit,
        )
    )


async def mark_published(conn: asyncpg.Connection, sequence: int) -> None:
    """Record that an outbox row reached the broker."""
    await conn.execute("UPDATE outbox SET published_at = now() WHERE sequence = $1", sequence)


async def count_unpublished(conn: asyncpg.Connection) -> int:
    """How many outbox rows wait for the relay."""
    count: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    return count


async def delete_published_before(conn: asyncpg.Connection, cutoff: dt.datetime) -> int:
    """Drop published outbox rows older than ``cutoff``; return how many."""
    status = await conn.execute(
        "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1", cutoff
    )
    return int(status.split()[-1])


async def try_relay_lock(conn: asyncpg.Connection) -> bool:
    """Try to become the one active relay (session advisory lock on ``conn``)."""
    locked: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", OUTBOX_RELAY_LOCK_KEY)
    return locked
