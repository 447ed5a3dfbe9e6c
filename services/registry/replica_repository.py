"""The SQL of gateway replicas and of the replicas a rolling rollout switched, over asyncpg.

Like :mod:`.repository`, every function takes a connection so that the caller
decides what one transaction holds. Heartbeats only upsert their replica's
row: no audit entry, no outbox event. Times are the database's (``now()``),
so every replica's heartbeat is judged by one clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg

from headwater.services.registry.repository import Row

_ACTIVE = "r.state IN ('pending', 'progressing', 'paused')"


async def upsert_replica(
    conn: asyncpg.Connection, replica_id: str, address: str, versions: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """Record a heartbeat: the replica's address and versions, heard from now.

    Returns the versions its row held before (None: the replica had no row).
    """
    # every part of the statement sees the snapshot from before it: ``previous`` is the old row
    previous: list[dict[str, Any]] | None = await conn.fetchval(
        "WITH previous AS (SELECT versions FROM replicas WHERE id = $1)"
        " INSERT INTO replicas (id, address, versions) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address,"
        " versions = EXCLUDED.versions, last_heartbeat_at = now()"
        " RETURNING (SELECT versions FROM previous)",
        replica_id,
        address,
        versions,
    )
    return previous


async def fetch_replicas(conn: asyncpg.Connection) -> tuple[list[Row], dt.datetime]:
    """Every replica row, and the database's time now (to judge their heartbeats by)."""
    now: dt.datetime = await conn.fetchval("SELECT now()")
    rows = list(await conn.fetch("SELECT * FROM replicas ORDER BY id"))
    return rows, now


async def delete_replicas_silent_since(
    conn: asyncpg.Connection, replica_ids: Sequence[str], cutoff: dt.datetime
) -> int:
    """Delete these replicas unless they heartbeat after ``cutoff``; return how many went."""
    status = await conn.execute(
        "DELETE FROM replicas WHERE id = ANY($1::text[]) AND last_heartbeat_at < $2",
        list(replica_ids),
        cutoff,
    )
    return int(status.split()[-1])


async def fetch_rolling_rollouts(conn: asyncpg.Connection, model: str = "") -> list[Row]:
    """The active rolling rollouts (of one model, or all), each with its deployment's revision."""
    query = (
        "SELECT r.id, r.model, r.baseline_version, r.candidate_version, r.step,"
        " r.switched_replicas, d.revision AS deployment_revision"
        " FROM rollouts r JOIN deployments d ON d.model = r.model"
        f" WHERE r.strategy = 'rolling' AND {_ACTIVE} AND ($1 = '' OR r.model = $1)"
        " ORDER BY r.model"
    )
    return list(await conn.fetch(query, model))


async def set_switched_replicas(
    conn: asyncpg.Connection, rollout_id: str, replica_ids: Sequence[str]
) -> None:
    """Record the replicas a rolling rollout has switched (in switch order)."""
    await conn.execute(
        "UPDATE rollouts SET switched_replicas = $2::text[] WHERE id = $1",
        rollout_id,
        list(replica_ids),
    )
