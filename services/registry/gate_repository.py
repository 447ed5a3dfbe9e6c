"""The SQL of promotion gates and evaluations, over asyncpg.

Like :mod:`.repository`, every function takes a connection so that the caller
(:mod:`.gate_service`) decides what one transaction holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from headwater.services.registry.evaluations import NewEvaluation
from headwater.services.registry.gates import PromotionGates
from headwater.services.registry.repository import Row


async def fetch_gates(conn: asyncpg.Connection, model: str) -> Row | None:
    """A model's gates row, or None when they were never set."""
    return await conn.fetchrow("SELECT * FROM promotion_gates WHERE model = $1", model)


async def upsert_gates(
    conn: asyncpg.Connection, model: str, gates: PromotionGates, actor: str
) -> Row:
    """Replace a model's gates; the revision grows by one with every change."""
    score = gates.min_score
    row = await conn.fetchrow(
        "INSERT INTO promotion_gates (model, score_metric, min_score, min_examples,"
        " require_schema_compatible, max_warmup_latency_ms, revision, updated_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, 1, $7) ON CONFLICT (model) DO UPDATE SET"
        " score_metric = EXCLUDED.score_metric, min_score = EXCLUDED.min_score,"
        " min_examples = EXCLUDED.min_examples,"
        " require_schema_compatible = EXCLUDED.require_schema_compatible,"
        " max_warmup_latency_ms = EXCLUDED.max_warmup_latency_ms,"
        " revision = promotion_gates.revision + 1, updated_by = EXCLUDED.updated_by,"
        " updated_at = now() RETURNING *",
        model,
        score.metric if score else None,
        score.threshold if score else None,
        gates.min_examples,
        gates.require_schema_compatible,
        gates.max_warmup_latency_ms,
        actor,
    )
    assert row is not None
    return row


async def upsert_evaluation(conn: asyncpg.Connection, row: NewEvaluation) -> Row:
    """Keep ``row`` unless a newer evaluation of its (model, version, metric, source) is stored.

    ``row`` is checked (its time set). Returns the row stored afterwards: ``row``
    itself, or the newer one that stayed.
    """
    assert row.at is not None
    stored = await conn.fetchrow(
        "INSERT INTO evaluations (model, version, metric, source, value, examples, at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (model, version, metric, source)"
        " DO UPDATE SET value = EXCLUDED.value, examples = EXCLUDED.examples, at = EXCLUDED.at,"
        " recorded_at = now() WHERE evaluations.at <= EXCLUDED.at RETURNING *",
        row.model,
        row.version,
        row.metric,
        row.source,
        row.value,
        row.examples,
        row.at,
    )
    if stored is None:  # a newer one is kept
        stored = await conn.fetchrow(
            "SELECT * FROM evaluations WHERE model = $1 AND version = $2 AND metric = $3"
            " AND source = $4",
            row.model,
            row.version,
            row.metric,
            row.source,
        )
    assert stored is not None
    return stored


async def upsert_evaluations_of_known_versions(
    conn: asyncpg.Connection, rows: Sequence[NewEvaluation]
) -> None:
    """Keep each of ``rows`` (measured now) whose version exists, in one statement.

    A row of a version the registry does not have is skipped (not an error: a
    heartbeat may name anything); a newer stored evaluation stays, as in
    :func:`upsert_evaluation`.
    """
    if not rows:
        return
    await conn.execute(
        "INSERT INTO evaluations (model, version, metric, source, value, examples, at)"
        " SELECT e.model, e.version, e.metric, e.source, e.value, e.examples, now()"
        " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[],"
        " $6::bigint[]) AS e(model, version, metric, source, value, examples)"
        " JOIN versions v ON v.model = e.model AND v.version = e.version"
        " ON CONFLICT (model, version, metric, source) DO UPDATE SET value = EXCLUDED.value,"
        " examples = EXCLUDED.examples, at = EXCLUDED.at, recorded_at = now()"
        " WHERE evaluations.at <= EXCLUDED.at",
        [r.model for r in rows],
        [r.version for r in rows],
        [r.metric for r in rows],
        [r.source for r in rows],
        [r.value for r in rows],
        [r.examples for r in rows],
    )


async def fetch_evaluations(conn: asyncpg.Connection, model: str, version: int) -> list[Row]:
    """The latest evaluations of one version, by metric, then source."""
    return list(
        await conn.fetch(
            "SELECT * FROM evaluations WHERE model = $1 AND version = $2 ORDER BY metric, source",
            model,
            version,
        )
    )
