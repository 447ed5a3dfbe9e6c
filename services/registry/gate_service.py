"""The promotion gate use cases: gates, evaluations, and the checks rollouts run.

A model's gates are set and read here, evaluations recorded and listed, and
a rollout's candidate checked when the rollout starts and when it is promoted.
Setting gates is one transaction with its audit entry (``gates.set``) and a
PROMOTION_GATES_CHANGED outbox event. Evaluations are kept, the latest per
(model, version, metric, source), without an audit entry or an event: sources
report them all the time. A refused rollout changes nothing but the audit log
(``gates.refused``, with every gate's result). The rules are :mod:`.gates`'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg

from headwater.services.registry import domain, gate_convert, gates, metrics, rollouts
from headwater.services.registry import gate_repository as gate_repo
from headwater.services.registry import repository as repo
from headwater.services.registry.evaluations import NewEvaluation, validate_new_evaluation
from headwater.services.registry.rollout_policy import NewRollout
from headwater.services.registry.service import record_change
from headwater.shared.pb import events_pb2, registry_pb2

GATES_CHANGED = events_pb2.REGISTRY_EVENT_KIND_PROMOTION_GATES_CHANGED
_REFUSED = "gates.refused"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class GateService:
    """Promotion gates and the evaluations they judge, over PostgreSQL.

    Args:
        pool: asyncpg pool whose connections ran :func:`repository.init_connection`.
        on_commit: Called after every committed change (wakes the outbox relay).
        clock: The registry's clock (evaluations without a time are stamped with it).

    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_commit: Callable[[], None] = lambda: None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._pool = pool
        self._on_commit = on_commit
        self._clock = clock

    async def set_gates(
        self, model: str, wanted: gates.PromotionGates, actor: str
    ) -> registry_pb2.PromotionGates:
        """Replace a model's gates (checked against its task); the revision grows by one."""
        domain.validate_model_name(model)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await repo.fetch_model(conn, model)
            if row is None:
                raise domain.no_model_error(model)
            gates.validate_gates(wanted, row["task"])
            stored = await gate_repo.upsert_gates(conn, model, wanted, actor)
            message = gate_convert.gates_message(model, stored)
            detail = {"revision": stored["revision"], **gate_convert.gates_json(wanted)}
            event = events_pb2.RegistryEvent(kind=GATES_CHANGED, promotion_gates=message)
            await record_change(conn, actor, "gates.set", model, detail, event)
        metrics.CHANGES.labels("gates.set").inc()
        self._on_commit()
        return message

    async def get_gates(self, model: str) -> registry_pb2.PromotionGates:
        """A model's gates (the defaults, revision 0, when never set)."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            if await repo.fetch_model(conn, model) is None:
                raise domain.no_model_error(model)
            row = await gate_repo.fetch_gates(conn, model)
        return gate_convert.gates_message(model, row)

    async def record_evaluation(self, evaluation: NewEvaluation) -> registry_pb2.Evaluation:
        """Keep an evaluation unless a newer one (same metric, source) is; return the one kept."""
        checked = validate_new_evaluation(evaluation, self._clock())
        async with self._pool.acquire() as conn, conn.transaction():
            await _existing_version(conn, checked.model, checked.version)
            row = await gate_repo.upsert_evaluation(conn, checked)
        return gate_convert.evaluation_message(row)

    async def list_evaluations(self, model: str, version: int) -> list[registry_pb2.Evaluation]:
        """The latest evaluations of one version, by metric, then source."""
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            await _existing_version(conn, model, version)
            rows = await gate_repo.fetch_evaluations(conn, model, version)
        return [gate_convert.evaluation_message(row) for row in rows]

    # --- the checks rollouts run (inside their transaction) --------------------------

    async def enforce_start(
        self, conn: asyncpg.Connection, draft: NewRollout, baseline: int
    ) -> None:
        """Refuse (GateRefusal) a rollout of a candidate that fails a gate of its model."""
        context = {"action": "start", "strategy": draft.strategy}
        attempt = f"start a {draft.strategy} rollout"
        await self._enforce(conn, draft.model, draft.candidate_version, baseline, attempt, context)

    async def enforce_promote(
        self, conn: asyncpg.Connection, rollout: rollouts.Rollout, rollout_id: str
    ) -> None:
        """Refuse (GateRefusal) to promote a rollout whose candidate fails a gate of its model."""
        context = {"action": "promote", "strategy": rollout.strategy, "rollout_id": rollout_id}
        await self._enforce(
            conn, rollout.model, rollout.candidate_version, rollout.baseline_version,
            "be promoted", context,
        )  # fmt: skip

    async def _enforce(
        self,
        conn: asyncpg.Connection,
        model: str,
        version: int,
        baseline: int,
        attempt: str,
        context: dict[str, Any],
    ) -> None:
        wanted = gate_convert.gates_of_row(await gate_repo.fetch_gates(conn, model))
        candidate = await _candidate(conn, model, version, baseline)
        rows = await gate_repo.fetch_evaluations(conn, model, version)
        report = gates.evaluate(wanted, candidate, map(gate_convert.evaluation_of_row, rows))
        if not report.passed:
            context = {**context, "gates": gate_convert.gates_json(wanted)}
            raise gates.refusal(candidate, report, attempt, context)

    async def record_refusal(self, refusal: gates.GateRefusal, actor: str) -> None:
        """Audit a refused rollout (``gates.refused``: the gates, every result, the message).

        A refusal equal to the model's last audit entry (the same caller retrying
        on the same evidence, e.g. a controller every tick) is not written again.
        """
        candidate = refusal.candidate
        assert candidate is not None  # the gates' refusals always name their candidate
        detail = {
            **refusal.context, "version": candidate.version,
            "baseline_version": candidate.baseline_version,
            "results": gate_convert.report_json(refusal.report), "message": str(refusal),
        }  # fmt: skip
        async with self._pool.acquire() as conn, conn.transaction():
            last = await repo.fetch_audit(conn, candidate.model, 1)
            if last and (last[0]["action"], last[0]["actor"], last[0]["detail"]) == (
                _REFUSED, actor, detail
            ):
                return
            await record_change(conn, actor, _REFUSED, candidate.model, detail)
        metrics.CHANGES.labels(_REFUSED).inc()


async def _existing_version(conn: asyncpg.Connection, model: str, version: int) -> None:
    if await repo.fetch_version(conn, model, version) is None:
        if await repo.fetch_model(conn, model) is None:
            raise domain.no_model_error(model)
        raise domain.no_version_error(model, version)


async def _candidate(
    conn: asyncpg.Connection, model: str, version: int, baseline: int
) -> gates.Candidate:
    """What a check judges: the model's task and schema, the two versions' specs."""
    model_row = await repo.fetch_model(conn, model)
    candidate_row = await repo.fetch_version(conn, model, version)
    baseline_row = await repo.fetch_version(conn, model, baseline)
    assert model_row is not None and candidate_row is not None and baseline_row is not None
    return gates.Candidate(
        model=model,
        task=model_row["task"],
        features=tuple(feature["name"] for feature in model_row["features"]),
        version=version,
        spec_json=candidate_row["spec_json"],
        baseline_version=baseline,
        baseline_spec_json=baseline_row["spec_json"],
    )
