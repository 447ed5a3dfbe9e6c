"""The replica use cases: heartbeats, the live replicas, and a rolling rollout's next switch.

Heartbeats are frequent (every replica, every few seconds), so one only
upserts its replica's row (with, in the same transaction, the warm-up
latencies it reports anew, as evaluations: none when nothing changed) and
reads the active rolling rollouts: no audit entry, no outbox event, no lock.
A replica silent for longer than the replica timeout is left out of every
answer; listing the replicas deletes such rows.
The rules are :mod:`.replicas`'; this module reads, decides through them, writes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from headwater.services.registry import domain, replicas, rollouts
from headwater.services.registry import gate_repository as gate_repo
from headwater.services.registry import replica_convert as convert
from headwater.services.registry import replica_repository as repo
from headwater.services.registry.evaluations import NewEvaluation, gateway_source
from headwater.services.registry.gates import LATENCY_METRIC
from headwater.services.registry.repository import Row
from headwater.shared.pb import registry_pb2


class ReplicaService:
    """Gateway replicas: their heartbeats, and who is live.

    Args:
        pool: asyncpg pool whose connections ran :func:`repository.init_connection`.
        timeout_s: How long a replica stays live after its last heartbeat.

    """

    def __init__(self, pool: asyncpg.Pool, timeout_s: float) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    async def heartbeat(self, beat: replicas.Heartbeat) -> registry_pb2.HeartbeatResponse:
        """Record a replica's heartbeat; what it must answer with for each rolling rollout."""
        replicas.validate_heartbeat(beat)
        async with self._pool.acquire() as conn:
            async with conn.transaction():  # the row and the latencies it reports, together
                previous = await repo.upsert_replica(
                    conn, beat.replica_id, beat.address, convert.versions_json(beat.versions)
                )
                await record_warmups(conn, beat, previous)
            rolling = await repo.fetch_rolling_rollouts(conn)
        assignments = replicas.assignments_for(
            beat.replica_id, [convert.rolling_of_row(r) for r in rolling]
        )
        return registry_pb2.HeartbeatResponse(
            assignments=[convert.assignment_message(a) for a in assignments],
            replica_timeout_s=self._timeout_s,
        )

    async def list_replicas(self, model: str = "") -> list[registry_pb2.Replica]:
        """The live replicas by id (each with ``model``'s versions only, when given)."""
        if model:
            domain.validate_model_name(model)
        async with self._pool.acquire() as conn:
            rows, now = await repo.fetch_replicas(conn)
            live, expired = replicas.split_live(
                map(convert.replica_of_row, rows), now, self._timeout_s
            )
            if expired:  # lazily: one that heartbeat meanwhile is kept
                cutoff = now - dt.timedelta(seconds=self._timeout_s)
                await repo.delete_replicas_silent_since(conn, [r.id for r in expired], cutoff)
            rolling = [
                convert.rolling_of_row(r) for r in await repo.fetch_rolling_rollouts(conn, model)
            ]
        return [
            convert.replica_message(r, replicas.assignments_for(r.id, rolling), model) for r in live
        ]


async def record_warmups(
    conn: asyncpg.Connection, beat: replicas.Heartbeat, previous: list[dict[str, Any]] | None
) -> None:
    """Record the warm-up latencies a heartbeat reports anew as evaluations of their versions.

    Metric ``warmup_latency_ms``, source ``gateway:<replica id>``: what the
    latency gate reads, so gateways need not call RecordEvaluation. Only a
    latency that is new or changed since the replica's previous heartbeat
    (``previous``, its row's versions before) is written; one of a version the
    registry does not have is skipped.
    """
    before = None if previous is None else convert.versions_of_json(previous)
    source = gateway_source(beat.replica_id)
    await gate_repo.upsert_evaluations_of_known_versions(
        conn,
        [
            NewEvaluation(v.model, v.version, source, LATENCY_METRIC, v.warmup_latency_ms)
            for v in replicas.new_warmups(beat, before)
        ],
    )


async def live_replicas(conn: asyncpg.Connection, timeout_s: float) -> tuple[replicas.Replica, ...]:
    """The replicas that heartbeat within ``timeout_s``, by id."""
    rows, now = await repo.fetch_replicas(conn)
    live, _ = replicas.split_live(map(convert.replica_of_row, rows), now, timeout_s)
    return live


async def switch_next_replica(
    conn: asyncpg.Connection, row: Row, rollout: rollouts.Rollout, timeout_s: float
) -> replicas.Switch:
    """A rolling ADVANCE inside the caller's transaction: switch and record the next replica.

    ``row`` is the rollout's row (locked by the caller through its deployment),
    ``rollout`` where it stands (with the replicas switched so far).

    Raises:
        FailedPrecondition: see :func:`.replicas.advance_rolling`.

    """
    live = await live_replicas(conn, timeout_s)
    switch = replicas.advance_rolling(rollout, live)
    if switch.replica_id:
        await repo.set_switched_replicas(conn, row["id"], switch.move.rollout.switched_replicas)
    return switch
