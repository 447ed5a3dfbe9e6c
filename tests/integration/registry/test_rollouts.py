"""Rollouts against a real PostgreSQL and broker: routes, history, audit, events, concurrency."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from headwater.shared.errors import FailedPrecondition, InvalidInput, ModelNotFound
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient, rollout_policy
from headwater.shared.settings import KafkaSettings
from tests.fixtures import running_registry
from tests.integration.registry.conftest import (
    FEATURES,
    SPEC,
    read_all_events,
    two_versions_deployed,
    wait_all_published,
)

pytestmark = pytest.mark.integration

K = events_pb2.RegistryEventKind
R = registry_pb2


def weights(deployment: registry_pb2.Deployment) -> list[tuple[int, float, int]]:
    return [(r.version, round(r.weight, 9), r.role) for r in deployment.routes]


async def test_canary_start_advance_promote_writes_routes_history_audit_and_events(
    client: RegistryClient, database_url: str, kafka_settings: KafkaSettings
) -> None:
    await two_versions_deployed(client)
    policy = rollout_policy([10, 50, 100], interval_s=30, max_drop=0.0)

    started = await client.start_rollout("churn", 2, "canary", policy, reason="new features")
    assert (started.state, started.step, started.revision) == (R.ROLLOUT_STATE_PROGRESSING, 0, 1)
    assert (started.baseline_version, started.candidate_version) == (1, 2)
    assert started.actor == "tester" and started.strategy == R.ROLLOUT_STRATEGY_CANARY
    assert list(started.policy.step_percents) == [10, 50, 100]
    assert started.policy.max_drop == 0.0 and started.policy.min_samples == 200  # default
    assert weights(await client.get_deployment("churn")) == [
        (1, 0.9, R.ROUTE_ROLE_PRIMARY), (2, 0.1, R.ROUTE_ROLE_CANARY)]  # fmt: skip

    evidence = {"candidate.n": 240.0, "baseline.n": 2100.0, "log_e": -0.4}
    advanced = await client.transition_rollout(
        "churn", "advance", reason="no worse", evidence=evidence, expected_revision=1,
        rollout_id=started.id,
    )  # fmt: skip
    assert (advanced.step, advanced.revision) == (1, 2)
    assert advanced.step_started_at.ToDatetime() >= started.step_started_at.ToDatetime()
    assert weights(await client.get_deployment("churn")) == [
        (1, 0.5, R.ROUTE_ROLE_PRIMARY), (2, 0.5, R.ROUTE_ROLE_CANARY)]  # fmt: skip

    promoted = await client.transition_rollout("churn", "promote", expected_revision=2)
    assert (promoted.state, promoted.revision) == (R.ROLLOUT_STATE_PROMOTED, 3)
    deployment = await client.get_deployment("churn")
    assert weights(deployment) == [(2, 1.0, R.ROUTE_ROLE_PRIMARY)]
    assert deployment.strategy == "canary" and deployment.revision == 4
    assert await client.get_rollout("churn") == promoted  # the latest, once none is active

    (history,) = await client.list_rollouts("churn")
    assert history.rollout == promoted
    steps = [(t.from_state, t.to_state, t.action, t.step, t.revision) for t in history.transitions]
    assert steps == [
        (R.ROLLOUT_STATE_UNSPECIFIED, R.ROLLOUT_STATE_PROGRESSING, R.ROLLOUT_ACTION_START, 0, 1),
        (R.ROLLOUT_STATE_PROGRESSING, R.ROLLOUT_STATE_PROGRESSING, R.ROLLOUT_ACTION_ADVANCE, 1, 2),
        (R.ROLLOUT_STATE_PROGRESSING, R.ROLLOUT_STATE_PROMOTED, R.ROLLOUT_ACTION_PROMOTE, 1, 3),
    ]
    start, advance, _ = history.transitions
    assert start.reason == "new features" and advance.reason == "no worse"
    assert dict(advance.evidence) == evidence and advance.actor == "tester"
    assert advance.rollout_id == started.id and advance.at.seconds > 0

    audit = [e for e in await client.list_audit_entries("churn") if e.action.startswith("rollout")]
    assert [e.action for e in audit] == ["rollout.promote", "rollout.advance", "rollout.start"]
    assert {e.actor for e in audit} == {"tester"}
    detail = json.loads(audit[1].detail_json)
    assert detail["evidence"] == evidence and detail["rollout_id"] == started.id
    assert detail["routes"] == [{"version": 1, "weight": 0.5, "role": "primary"},
                                {"version": 2, "weight": 0.5, "role": "canary"}]  # fmt: skip
    assert detail["deployment_revision"] == 3

    await wait_all_published(database_url)
    events = [e for _, e in await read_all_events(kafka_settings)]
    rollout_events = [e for e in events if e.kind == K.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED]
    assert [e.rollout.revision for e in rollout_events] == [1, 2, 3]
    assert rollout_events[-1].rollout == promoted and rollout_events[-1].version == 2
    assert all(e.actor == "tester" and e.model == "churn" for e in rollout_events)
    kinds = [e.kind for e in events if e.sequence > rollout_events[0].sequence - 2]
    # Each move: the routes first (gateways apply them), then the rollout that wrote them.
    pair = [K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED, K.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED]
    assert kinds == pair * 3
    changed = [e.deployment for e in events if e.kind == K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED]
    assert changed[-1] == deployment


async def test_pause_and_resume_keep_the_routes_and_publish_only_the_rollout(
    client: RegistryClient, database_url: str, kafka_settings: KafkaSettings
) -> None:
    await two_versions_deployed(client)
    await client.start_rollout("churn", 2, "canary")
    before = await client.get_deployment("churn")

    paused = await client.transition_rollout("churn", "pause", reason="freeze")
    assert paused.state == R.ROLLOUT_STATE_PAUSED
    with pytest.raises(FailedPrecondition, match="rollout of 'churn' is paused: resume it or roll"):
        await client.transition_rollout("churn", "advance")
    resumed = await client.transition_rollout("churn", "resume")
    assert resumed.state == R.ROLLOUT_STATE_PROGRESSING and resumed.revision == 3
    assert await client.get_deployment("churn") == before

    await wait_all_published(database_url)
    events = [e for _, e in await read_all_events(kafka_settings)]
    assert [e.kind for e in events[-3:]] == [K.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED] * 3


async def test_blue_green_switches_at_once_and_rolls_back_to_the_loaded_baseline(
    client: RegistryClient,
) -> None:
    await two_versions_deployed(client)
    started = await client.start_rollout("churn", 2, "blue-green")
    assert started.state == R.ROLLOUT_STATE_PENDING
    assert weights(await client.get_deployment("churn")) == [
        (1, 1.0, R.ROUTE_ROLE_PRIMARY), (2, 0.0, R.ROUTE_ROLE_CHALLENGER)]  # fmt: skip
    await client.transition_rollout("churn", "advance")
    assert weights(await client.get_deployment("churn")) == [
        (2, 1.0, R.ROUTE_ROLE_PRIMARY), (1, 0.0, R.ROUTE_ROLE_CHALLENGER)]  # fmt: skip
    back = await client.transition_rollout("churn", "rollback", evidence={"error_rate": 0.2})
    assert back.state == R.ROLLOUT_STATE_ROLLED_BACK
    assert weights(await client.get_deployment("churn")) == [(1, 1.0, R.ROUTE_ROLE_PRIMARY)]


async def test_a_stale_revision_is_refused_and_changes_nothing(client: RegistryClient) -> None:
    await two_versions_deployed(client)
    started = await client.start_rollout("churn", 2, "canary")
    await client.transition_rollout("churn", "advance", expected_revision=started.revision)

    with pytest.raises(FailedPrecondition, match=r"at revision 2 \(progressing, step 1\), not 1"):
        await client.transition_rollout("churn", "rollback", expected_revision=started.revision)
    current = await client.get_rollout("churn")
    assert (current.state, current.revision) == (R.ROLLOUT_STATE_PROGRESSING, 2)
    assert len((await client.list_rollouts("churn"))[0].transitions) == 2


async def test_two_controllers_deciding_at_once_one_wins(client: RegistryClient) -> None:
    await two_versions_deployed(client)
    started = await client.start_rollout("churn", 2, "canary")
    decisions = await asyncio.gather(
        *(client.transition_rollout("churn", action, expected_revision=started.revision)
          for action in ("advance", "rollback", "advance", "promote")),
        return_exceptions=True,
    )  # fmt: skip
    won = [d for d in decisions if isinstance(d, registry_pb2.Rollout)]
    lost = [d for d in decisions if d not in won]
    assert len(won) == 1 and all(isinstance(d, FailedPrecondition) for d in lost)
    assert (await client.get_rollout("churn")).revision == 2


async def test_one_active_rollout_per_model_and_hand_set_deployments_wait(
    client: RegistryClient,
) -> None:
    await two_versions_deployed(client)
    await client.create_version("churn", SPEC)
    await client.start_rollout("churn", 2, "canary")

    with pytest.raises(FailedPrecondition, match=r"progressing \(canary of v2 over v1\): promote"):
        await client.start_rollout("churn", 3, "shadow")
    with pytest.raises(FailedPrecondition, match=r"abort the rollout first \(headwater rollout"):
        await client.deploy("churn", 3)
    await client.transition_rollout("churn", "pause")
    with pytest.raises(FailedPrecondition, match="has a rollout paused"):
        await client.set_deployment("churn", [(1, 1.0, "primary")])

    aborted = await client.transition_rollout("churn", "abort", reason="wrong version")
    assert aborted.state == R.ROLLOUT_STATE_ABORTED
    with pytest.raises(FailedPrecondition, match="is already aborted: start a new one"):
        await client.transition_rollout("churn", "resume")
    await client.deploy("churn", 1)  # free again
    second = await client.start_rollout("churn", 3, "shadow", rollout_policy(shadow_percent=25))
    assert weights(await client.get_deployment("churn")) == [
        (1, 1.0, R.ROUTE_ROLE_PRIMARY), (3, 0.25, R.ROUTE_ROLE_SHADOW)]  # fmt: skip
    assert await client.get_rollout("churn") == second
    assert [h.rollout.id for h in await client.list_rollouts("churn")] == [second.id, aborted.id]
    assert len(await client.list_rollouts("churn", limit=1)) == 1


async def test_start_refusals_name_the_next_step(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    with pytest.raises(FailedPrecondition, match="no deployment to roll out from: deploy a first"):
        await client.start_rollout("churn", 1, "canary")
    await client.deploy("churn", 1)
    with pytest.raises(FailedPrecondition, match="version 1 is already the primary of 'churn'"):
        await client.start_rollout("churn", 1, "canary")
    with pytest.raises(ModelNotFound, match="model 'churn' has no version 7"):
        await client.start_rollout("churn", 7, "canary")
    with pytest.raises(InvalidInput, match="'direct' needs no rollout"):
        await client.start_rollout("churn", 1, "direct")
    with pytest.raises(InvalidInput, match="strategy is required"):
        await client.start_rollout("churn", 1, R.ROLLOUT_STRATEGY_UNSPECIFIED)
    with pytest.raises(InvalidInput, match="the last rollout step must be 100%"):
        await client.start_rollout("churn", 1, "canary", rollout_policy([5, 50]))
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        await client.start_rollout("nope", 1, "canary")
    with pytest.raises(ModelNotFound, match="has no rollout: start one"):
        await client.get_rollout("churn")
    with pytest.raises(ModelNotFound, match="has no rollout: start one"):
        await client.transition_rollout("churn", "pause")
    with pytest.raises(InvalidInput, match="action is required"):
        await client.transition_rollout("churn", R.ROLLOUT_ACTION_UNSPECIFIED)
    assert await client.list_rollouts("churn") == []


async def test_bandit_weights_come_from_the_controller(client: RegistryClient) -> None:
    await two_versions_deployed(client)
    await client.start_rollout("churn", 2, "bandit", rollout_policy(bandit_floor_weight=0.1))
    assert weights(await client.get_deployment("churn"))[1] == (2, 0.5, R.ROUTE_ROLE_CANARY)
    await client.transition_rollout("churn", "advance", evidence={"weight": 0.8, "p_best": 0.9})
    assert weights(await client.get_deployment("churn")) == [
        (1, 0.2, R.ROUTE_ROLE_PRIMARY), (2, 0.8, R.ROUTE_ROLE_CANARY)]  # fmt: skip
    with pytest.raises(InvalidInput, match="needs evidence 'weight'"):
        await client.transition_rollout("churn", "advance")


async def test_a_restarted_registry_keeps_the_rollout(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    async with running_registry(database_url, kafka_settings) as first:
        async with RegistryClient(first.target, deadline_s=10, actor="ops") as client:
            await two_versions_deployed(client)
            started = await client.start_rollout("churn", 2, "canary")
            advanced = await client.transition_rollout("churn", "advance")
    async with running_registry(database_url, kafka_settings) as second:
        async with RegistryClient(second.target, deadline_s=10, actor="monitor") as client:
            assert await client.get_rollout("churn") == advanced
            with pytest.raises(FailedPrecondition, match="already progressing"):
                await client.start_rollout("churn", 2, "canary")
            promoted = await client.transition_rollout(
                "churn", "promote", expected_revision=advanced.revision, rollout_id=started.id
            )
            (history,) = await client.list_rollouts("churn")
    assert promoted.state == R.ROLLOUT_STATE_PROMOTED and promoted.actor == "ops"
    assert [t.actor for t in history.transitions] == ["ops", "ops", "monitor"]


async def test_the_schema_keeps_one_active_rollout_per_model(
    client: RegistryClient, database_url: str
) -> None:
    await two_versions_deployed(client)
    started = await client.start_rollout("churn", 2, "canary")
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO rollouts (id, model, strategy, state, baseline_version,"
                " candidate_version, policy, revision, actor)"
                " VALUES ('x', 'churn', 'canary', 'paused', 2, 1, '{}', 1, 'sql')"
            )
        assert await conn.fetchval("SELECT count(*) FROM rollouts") == 1
        assert await conn.fetchval("SELECT id FROM rollouts") == started.id
    finally:
        await conn.close()
