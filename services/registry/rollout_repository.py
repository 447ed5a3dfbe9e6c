"""The SQL of rollouts and their transitions, over asyncpg.

Like :mod:`.repository`, every function takes a connection so that the caller
(:mod:`.rollout_service`) decides what one transaction holds. Writers lock the
model's deployment row first (:func:`.repository.lock_deployment`): starts,
transitions and hand-set deployments of one model then run one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from headwater.services.registry.repository import Row

_ACTIVE = "state IN ('pending', 'progressing', 'paused')"


@dataclass(frozen=True)
class RolloutRow:
    """The columns of a new ``rollouts`` row (``seq`` and the timestamps default)."""

    id: str
    model: str
    strategy: str
    state: str
    baseline_version: int
    candidate_version: int
    step: int
    policy: dict[str, Any]
    revision: int
    actor: str


@dataclass(frozen=True)
class TransitionRow:
    """The columns of a new ``rollout_transitions`` row (``id`` and ``at`` default)."""

    rollout_id: str
    from_state: str
    to_state: str
    action: str
    step: int
    revision: int
    actor: str
    reason: str
    evidence: dict[str, float]
    switched_replica: str = ""


async def insert_rollout(conn: asyncpg.Connection, row: RolloutRow) -> Row:
    """Insert a rollout; return it as stored."""
    stored = await conn.fetchrow(
        "INSERT INTO rollouts (id, model, strategy, state, baseline_version, candidate_version,"
        " step, policy, revision, actor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " RETURNING *",
        row.id,
        row.model,
        row.strategy,
        row.state,
        row.baseline_version,
        row.candidate_version,
        row.step,
        row.policy,
        row.revision,
        row.actor,
    )
    assert stored is not None
    return stored


async def update_rollout(
    conn: asyncpg.Connection, rollout_id: str, state: str, step: int, *, new_step_clock: bool
) -> Row:
    """Move a rollout to ``state`` and ``step``; its revision grows by one.

    ``new_step_clock`` restarts the time of the current step (``step_started_at``).
    """
    row = await conn.fetchrow(
        "UPDATE rollouts SET state = $2, step = $3, revision = revision + 1, updated_at = now(),"
        " step_started_at = CASE WHEN $4 THEN now() ELSE step_started_at END"
        " WHERE id = $1 RETURNING *",
        rollout_id,
        state,
        step,
        new_step_clock,
    )
    assert row is not None
    return row


async def insert_transition(conn: asyncpg.Connection, row: TransitionRow) -> Row:
    """Append one transition to a rollout's history; return it as stored."""
    stored = await conn.fetchrow(
        "INSERT INTO rollout_transitions (rollout_id, from_state, to_state, action, step,"
        " revision, actor, reason, evidence, switched_replica)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        row.rollout_id,
        row.from_state,
        row.to_state,
        row.action,
        row.step,
        row.revision,
        row.actor,
        row.reason,
        row.evidence,
        row.switched_replica,
    )
    assert stored is not None
    return stored


async def fetch_active_rollout(conn: asyncpg.Connection, model: str) -> Row | None:
    """The model's rollout that is not finished, or None (there is at most one)."""
    return await conn.fetchrow(f"SELECT * FROM rollouts WHERE model = $1 AND {_ACTIVE}", model)


async def fetch_latest_rollout(conn: asyncpg.Connection, model: str) -> Row | None:
    """The model's newest rollout, or None."""
    return await conn.fetchrow(
        "SELECT * FROM rollouts WHERE model = $1 ORDER BY seq DESC LIMIT 1", model
    )


async def fetch_rollouts(conn: asyncpg.Connection, model: str, limit: int) -> list[Row]:
    """The model's newest ``limit`` rollouts, newest first."""
    return list(
        await conn.fetch(
            "SELECT * FROM rollouts WHERE model = $1 ORDER BY seq DESC LIMIT $2", model, limit
        )
    )


async def fetch_transitions(conn: asyncpg.Connection, rollout_ids: Sequence[str]) -> list[Row]:
    """The transitions of these rollouts, oldest first."""
    return list(
        await conn.fetch(
            "SELECT * FROM rollout_transitions WHERE rollout_id = ANY($1::text[]) ORDER BY id",
            list(rollout_ids),
        )
    )
