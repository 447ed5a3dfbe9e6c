"""The rollout use cases: start, read, list and move a model's rollout over PostgreSQL.

Each start or transition is one transaction that locks the model's deployment
row (so starts, transitions and hand-set deployments of one model queue), then
writes the rollout row (revision + 1), its transition row, one audit entry,
the deployment's new routes when the move changes them (with a
DEPLOYMENT_CHANGED outbox event, as SetDeployment writes) and a ROLLOUT_CHANGED
outbox event, in that order. The rules are :mod:`.rollouts`'; this module only
reads, decides through them, and writes. A start and a promote first pass the
candidate's promotion gates (:mod:`.gate_service`): a refusal writes nothing
but its audit entry, once the refused transaction has rolled back.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from headwater.services.registry import convert, deployments, domain, metrics, replicas, rollouts
from headwater.services.registry import repository as repo
from headwater.services.registry import rollout_repository as rollout_repo
from headwater.services.registry.gate_service import GateService
from headwater.services.registry.gates import GateRefusal
from headwater.services.registry.replica_service import live_replicas, switch_next_replica
from headwater.services.registry.rollout_policy import (
    NewRollout,
    RolloutChange,
    validate_evidence,
    validate_reason,
)
from headwater.services.registry.service import record_change
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2, registry_pb2

DEPLOYMENT_CHANGED = events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED
ROLLOUT_CHANGED = events_pb2.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
#: Actions after which the controller's clock of the current step starts over.
_NEW_STEP_CLOCK = frozenset({"advance", "resume"})
Request = TypeVar("Request")


def _audits_gate_refusals(
    method: Callable[[RolloutService, Request, str], Awaitable[registry_pb2.Rollout]],
) -> Callable[[RolloutService, Request, str], Awaitable[registry_pb2.Rollout]]:
    """Audit a refusal by the promotion gates once its transaction has rolled back, re-raise it."""

    @functools.wraps(method)
    async def audited(self: RolloutService, request: Request, actor: str) -> registry_pb2.Rollout:
        try:
            return await method(self, request, actor)
        except GateRefusal as refusal:
            await self._gates.record_refusal(refusal, actor)
            raise

    return audited


class RolloutService:
    """Rollouts of candidate versions, their history and the routes they write.

    Args:
        pool: asyncpg pool whose connections ran :func:`repository.init_connection`.
        gates: Checks the candidate's promotion gates at start and promote.
        on_commit: Called after every committed change (wakes the outbox relay).
        replica_timeout_s: How long a gateway replica stays live after its last
            heartbeat (a rolling advance switches live replicas only).

    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        gates: GateService,
        on_commit: Callable[[], None] = lambda: None,
        replica_timeout_s: float = 15.0,
    ) -> None:
        self._pool = pool
        self._gates = gates
        self._on_commit = on_commit
        self._replica_timeout_s = replica_timeout_s

    @_audits_gate_refusals
    async def start_rollout(self, draft: NewRollout, actor: str) -> registry_pb2.Rollout:
        """Start rolling ``draft.candidate_version`` out over the deployed primary."""
        rollouts.validate_start(draft.model, draft.strategy, draft.candidate_version, draft.policy)
        validate_reason(draft.reason)
        async with self._pool.acquire() as conn, conn.transaction():
            deployment = await _locked_deployment(conn, draft.model)
            if deployment is None:
                raise rollouts.no_deployment_error(draft.model)
            active = await rollout_repo.fetch_active_rollout(conn, draft.model)
            if active is not None:
                raise rollouts.already_active_error(convert.rollout_of_row(active))
            if draft.candidate_version not in await repo.version_numbers(conn, draft.model):
                raise domain.no_version_error(draft.model, draft.candidate_version)
            baseline = _primary_version(deployment)
            move = rollouts.start(
                draft.model, draft.strategy, baseline, draft.candidate_version, draft.policy
            )
            await self._gates.enforce_start(conn, draft, baseline)
            row = await rollout_repo.insert_rollout(conn, _new_row(move.rollout, actor))
            written = await _write_move(
                conn, row, "", "start", actor, draft.reason, {}, deployment, move.routes
            )
        self._committed("start")
        return written

    @_audits_gate_refusals
    async def transition_rollout(self, change: RolloutChange, actor: str) -> registry_pb2.Rollout:
        """Move the model's active rollout by one action (the routes follow)."""
        domain.validate_model_name(change.model)
        domain.validate_choice("action", change.action, rollouts.ACTIONS)
        evidence = validate_evidence(change.evidence)
        validate_reason(change.reason)
        if change.expected_revision < 0:
            raise InvalidInput(f"expected_revision must be >= 0, got {change.expected_revision}")
        async with self._pool.acquire() as conn, conn.transaction():
            deployment = await _locked_deployment(conn, change.model)
            active = await rollout_repo.fetch_active_rollout(conn, change.model)
            if active is None:
                raise await _nothing_active(conn, change)
            assert deployment is not None  # a rollout starts only over a deployment
            current = convert.rollout_of_row(active)
            if change.rollout_id and change.rollout_id != active["id"]:
                raise rollouts.other_rollout_error(change.model, change.rollout_id, current)
            rollouts.check_revision(current, active["revision"], change.expected_revision)
            move, evidence, switched = await self._decide(conn, active, current, change, evidence)
            if change.action == "promote":
                await self._gates.enforce_promote(conn, current, active["id"])
            row = await rollout_repo.update_rollout(
                conn,
                active["id"],
                move.rollout.state,
                move.rollout.step,
                new_step_clock=change.action in _NEW_STEP_CLOCK,
            )
            written = await _write_move(
                conn, row, current.state, change.action, actor, change.reason, evidence,
                deployment, move.routes, switched_replica=switched,
            )  # fmt: skip
        self._committed(change.action)
        return written

    async def _decide(
        self,
        conn: asyncpg.Connection,
        active: repo.Row,
        current: rollouts.Rollout,
        change: RolloutChange,
        evidence: dict[str, float],
    ) -> tuple[rollouts.Move, dict[str, float], str]:
        """The move, its evidence and the replica it switched ('' but for a rolling advance)."""
        if current.strategy == "rolling" and change.action == "advance":
            switch = await switch_next_replica(conn, active, current, self._replica_timeout_s)
            return switch.move, {**evidence, **switch.evidence}, switch.replica_id
        move = rollouts.apply(current, change.action, evidence)
        if current.strategy == "blue-green" and change.action == "advance" and current.step == 0:
            live = await live_replicas(conn, self._replica_timeout_s)  # the switch: all ready?
            evidence = {**evidence, **replicas.check_switch_ready(current, live)}
        return move, evidence, ""

    async def get_rollout(self, model: str) -> registry_pb2.Rollout:
        """The model's active rollout, else its latest; NotFound when it never had one."""
        async with self._pool.acquire() as conn:
            row = await rollout_repo.fetch_latest_rollout(conn, model)
            if row is None:
                await _existing_model(conn, model)
                raise rollouts.no_rollout_error(model)
        return convert.rollout_message(row)

    async def list_rollouts(self, model: str, limit: int) -> list[registry_pb2.RolloutHistory]:
        """The model's newest rollouts (``limit``, 0: 20, at most 100), each with its history."""
        if limit < 0:
            raise InvalidInput(f"limit must be >= 0, got {limit}")
        limit = min(limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            await _existing_model(conn, model)
            rows = await rollout_repo.fetch_rollouts(conn, model, limit)
            transitions = await rollout_repo.fetch_transitions(conn, [r["id"] for r in rows])
        by_rollout: dict[str, list[registry_pb2.RolloutTransition]] = {r["id"]: [] for r in rows}
        for transition in transitions:
            by_rollout[transition["rollout_id"]].append(convert.transition_message(transition))
        return [
            registry_pb2.RolloutHistory(
                rollout=convert.rollout_message(row), transitions=by_rollout[row["id"]]
            )
            for row in rows
        ]

    def _committed(self, action: str) -> None:
        metrics.CHANGES.labels(f"rollout.{action}").inc()
        self._on_commit()


async def _write_move(
    conn: asyncpg.Connection,
    row: repo.Row,
    from_state: str,
    action: str,
    actor: str,
    reason: str,
    evidence: dict[str, float],
    deployment: repo.Row,
    routes: tuple[deployments.Route, ...] | None,
    *,
    switched_replica: str = "",
) -> registry_pb2.Rollout:
    """Write the transition, the routes (when they change), the audit entry and the events."""
    await rollout_repo.insert_transition(
        conn,
        rollout_repo.TransitionRow(
            rollout_id=row["id"], from_state=from_state, to_state=row["state"],
            action=action, step=row["step"], revision=row["revision"], actor=actor,
            reason=reason, evidence=evidence, switched_replica=switched_replica,
        ),
    )  # fmt: skip
    rollout = convert.rollout_message(row)
    detail: dict[str, Any] = {
        "rollout_id": row["id"], "strategy": row["strategy"], "from_state": from_state,
        "to_state": row["state"], "step": row["step"], "revision": row["revision"],
        "reason": reason, "evidence": evidence,
    }  # fmt: skip
    if switched_replica:
        detail.update(switched_replica=switched_replica, switched=list(rollout.switched_replicas))
    events = []
    if routes is not None:
        changed = await _write_routes(conn, row, deployment, routes)
        detail.update(deployment_revision=changed.revision, routes=convert.routes_json(routes))
        events.append(events_pb2.RegistryEvent(kind=DEPLOYMENT_CHANGED, deployment=changed))
    candidate = row["candidate_version"]
    events.append(
        events_pb2.RegistryEvent(kind=ROLLOUT_CHANGED, version=candidate, rollout=rollout)
    )
    await record_change(conn, actor, f"rollout.{action}", row["model"], detail, *events)
    return rollout


async def _locked_deployment(conn: asyncpg.Connection, model: str) -> repo.Row | None:
    await _existing_model(conn, model)
    return await repo.lock_deployment(conn, model)


async def _existing_model(conn: asyncpg.Connection, model: str) -> None:
    if await repo.fetch_model(conn, model) is None:
        raise domain.no_model_error(model)


def _primary_version(deployment: repo.Row) -> int:
    (primary,) = (r["version"] for r in deployment["routes"] if r["role"] == "primary")
    version: int = primary
    return version


def _new_row(rollout: rollouts.Rollout, actor: str) -> rollout_repo.RolloutRow:
    return rollout_repo.RolloutRow(
        id=str(uuid.uuid4()),
        model=rollout.model,
        strategy=rollout.strategy,
        state=rollout.state,
        baseline_version=rollout.baseline_version,
        candidate_version=rollout.candidate_version,
        step=rollout.step,
        policy=convert.policy_json(rollout.policy),
        revision=1,
        actor=actor,
    )


async def _write_routes(
    conn: asyncpg.Connection,
    rollout: repo.Row,
    deployment: repo.Row,
    routes: tuple[deployments.Route, ...],
) -> registry_pb2.Deployment:
    """Rewrite the deployment's routes (mode kept, strategy the rollout's); return it."""
    model = rollout["model"]
    deployments.validate_routes(routes, model, await repo.version_numbers(conn, model))
    row = await repo.upsert_deployment(
        conn, model, convert.routes_json(routes), deployment["mode"], rollout["strategy"]
    )
    return convert.deployment_message(row)


async def _nothing_active(conn: asyncpg.Connection, change: RolloutChange) -> Exception:
    """The error for a transition of a model whose rollouts are all finished (or none)."""
    latest = await rollout_repo.fetch_latest_rollout(conn, change.model)
    if latest is None:
        return rollouts.no_rollout_error(change.model)
    if change.rollout_id and change.rollout_id != latest["id"]:
        return rollouts.other_rollout_error(change.model, change.rollout_id, None)
    return rollouts.refusal(convert.rollout_of_row(latest), change.action)
