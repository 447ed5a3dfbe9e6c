"""Gateway replicas on a real PostgreSQL: heartbeats, the timeout, a rolling rollout's switches."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from headwater.shared.errors import FailedPrecondition, InvalidInput
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, replica_version
from headwater.shared.registry_gates_client import promotion_gates
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, running_registry
from tests.integration.registry.conftest import FEATURES, SPEC

pytestmark = pytest.mark.integration

R = registry_pb2
BASELINE_ONLY = [replica_version("churn", 1, ready=True, warmup_latency_ms=0.2)]
BOTH_READY = [*BASELINE_ONLY, replica_version("churn", 2, ready=True, warmup_latency_ms=0.3)]


async def two_versions_deployed(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    await client.create_version("churn", SPEC)
    await client.deploy("churn", 1)


async def count(database_url: str, table: str) -> int:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()


def assigned(answer: R.HeartbeatResponse) -> list[tuple[str, int, bool]]:
    return [(a.model, a.version, a.switched) for a in answer.assignments]


async def test_heartbeats_list_replicas_by_id_and_write_no_audit_or_event(
    client: RegistryClient, database_url: str
) -> None:
    await two_versions_deployed(client)
    audit, outbox = await count(database_url, "audit_log"), await count(database_url, "outbox")
    other = [replica_version("other", 4, ready=False)]
    for _ in range(3):
        answer = await client.heartbeat("gw-b", "10.0.0.2:8001", BOTH_READY + other)
        await client.heartbeat("gw-a", "10.0.0.1:8001", BASELINE_ONLY)
    assert answer.assignments == [] and answer.replica_timeout_s == 15

    listed = await client.list_replicas()
    assert [(r.id, r.address) for r in listed] == [
        ("gw-a", "10.0.0.1:8001"), ("gw-b", "10.0.0.2:8001")]  # fmt: skip
    b = listed[1]
    assert [(v.model, v.version, v.ready) for v in b.versions] == [
        ("churn", 1, True), ("churn", 2, True), ("other", 4, False)]  # fmt: skip
    assert b.versions[1].warmup_latency_ms == pytest.approx(0.3)
    assert b.first_heartbeat_at.ToDatetime() <= b.last_heartbeat_at.ToDatetime()
    (_, b) = await client.list_replicas("churn")  # every live replica, the model's versions only
    assert [v.version for v in b.versions] == [1, 2]
    assert (await client.list_replicas("other"))[0].versions == []
    assert await count(database_url, "audit_log") == audit
    assert await count(database_url, "outbox") == outbox
    assert await count(database_url, "replicas") == 2

    with pytest.raises(InvalidInput, match="invalid replica id"):
        await client.heartbeat("gw a", "h:1", [])
    with pytest.raises(InvalidInput, match="versions are >= 1"):
        await client.heartbeat("gw-a", "h:1", [replica_version("churn", 0, ready=True)])


async def test_warmup_latencies_heartbeat_are_evaluations_written_when_new_or_changed(
    client: RegistryClient,
) -> None:
    await two_versions_deployed(client)
    unknown = [replica_version("churn", 9, ready=True, warmup_latency_ms=1.0),
               replica_version("other", 4, ready=True, warmup_latency_ms=1.0)]  # fmt: skip
    await client.heartbeat("gw-a", "a:8001", BOTH_READY + unknown)
    await client.heartbeat("gw-b", "b:8001", [replica_version("churn", 2, ready=False)])
    (first,) = await client.list_evaluations("churn", 2)  # gw-b measured nothing yet
    assert (first.source, first.metric, first.examples) == ("gateway:gw-a", "warmup_latency_ms", 0)
    assert first.value == pytest.approx(0.3)
    assert [e.value for e in await client.list_evaluations("churn", 1)] == [pytest.approx(0.2)]

    await client.heartbeat("gw-a", "a:8001", BOTH_READY + unknown)  # unchanged: nothing written
    (again,) = await client.list_evaluations("churn", 2)
    assert (again.at, again.recorded_at) == (first.at, first.recorded_at)

    await client.set_promotion_gates("churn", promotion_gates(max_warmup_latency_ms=0.5))
    slow = [*BASELINE_ONLY, replica_version("churn", 2, ready=True, warmup_latency_ms=0.7)]
    await client.heartbeat("gw-a", "a:8001", slow)
    with pytest.raises(FailedPrecondition, match=r"warmup_latency_ms 0.7 > 0.5 allowed"):
        await client.start_rollout("churn", 2, "blue-green")
    await client.heartbeat("gw-a", "a:8001", BOTH_READY)  # warmed up again, faster
    assert (await client.start_rollout("churn", 2, "blue-green")).candidate_version == 2
    (latest,) = await client.list_evaluations("churn", 2)
    assert latest.value == pytest.approx(0.3) and latest.at.ToDatetime() > first.at.ToDatetime()


async def test_a_silent_replica_drops_out_after_the_timeout_and_is_deleted(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    async with (
        running_registry(database_url, kafka_settings, replica_timeout_s=0.5) as server,
        RegistryClient(server.target, deadline_s=10) as client,
    ):
        await client.heartbeat("gw-silent", "h:1", [])
        await client.heartbeat("gw-alive", "h:2", [])

        async def only_the_alive_one() -> bool:
            await client.heartbeat("gw-alive", "h:2", [])
            return [r.id for r in await client.list_replicas()] == ["gw-alive"]

        await eventually(only_the_alive_one, timeout_s=10, interval_s=0.1, what="gw-silent gone")
        assert await count(database_url, "replicas") == 1  # deleted, not only hidden
        await client.heartbeat("gw-silent", "h:1", [])  # back: listed again
        assert [r.id for r in await client.list_replicas()] == ["gw-alive", "gw-silent"]


async def test_a_rolling_rollout_switches_one_ready_replica_per_advance(
    client: RegistryClient, database_url: str
) -> None:
    await two_versions_deployed(client)
    await client.heartbeat("gw-a", "a:8001", BASELINE_ONLY)
    await client.heartbeat("gw-b", "b:8001", BASELINE_ONLY)
    started = await client.start_rollout("churn", 2, "rolling", reason="v2 everywhere")
    revision = (await client.get_deployment("churn")).revision
    assert [(r.version, r.role) for r in (await client.get_deployment("churn")).routes] == [
        (1, R.ROUTE_ROLE_PRIMARY), (2, R.ROUTE_ROLE_CHALLENGER)]  # fmt: skip

    with pytest.raises(FailedPrecondition, match=r"reports v2 ready \(waiting for gw-a, gw-b\)"):
        await client.transition_rollout("churn", "advance")
    await client.heartbeat("gw-b", "b:8001", BOTH_READY)  # gw-b first, though gw-a sorts first
    first = await client.transition_rollout("churn", "advance", expected_revision=started.revision)
    assert list(first.switched_replicas) == ["gw-b"] and first.step == 0
    assert first.state == R.ROLLOUT_STATE_PROGRESSING
    assert (await client.get_deployment("churn")).revision == revision  # routes unchanged
    b_told = await client.heartbeat("gw-b", "b:8001", BOTH_READY)
    a_told = await client.heartbeat("gw-a", "a:8001", BASELINE_ONLY)
    assert assigned(b_told) == [("churn", 2, True)] and assigned(a_told) == [("churn", 1, False)]
    assert b_told.assignments[0].deployment_revision == revision
    assert b_told.assignments[0].rollout_id == started.id

    with pytest.raises(FailedPrecondition, match=r"waiting for gw-a\): advance again once one"):
        await client.transition_rollout("churn", "advance")
    await client.heartbeat("gw-a", "a:8001", BOTH_READY)
    last = await client.transition_rollout("churn", "advance", reason="gw-a is warm")
    assert list(last.switched_replicas) == ["gw-b", "gw-a"] and last.step == 1
    deployment = await client.get_deployment("churn")
    assert [(r.version, r.role) for r in deployment.routes] == [
        (2, R.ROUTE_ROLE_PRIMARY), (1, R.ROUTE_ROLE_CHALLENGER)]  # fmt: skip
    told = await client.heartbeat("gw-a", "a:8001", BOTH_READY)
    assert told.assignments == []  # the routes say it now
    with pytest.raises(FailedPrecondition, match=r"v2 already: promote it \(drops v1\)"):
        await client.transition_rollout("churn", "advance")
    await client.transition_rollout("churn", "promote")

    (history,) = await client.list_rollouts("churn")
    moves = [(t.action, t.switched_replica, t.step) for t in history.transitions]
    assert moves == [
        (R.ROLLOUT_ACTION_START, "", 0), (R.ROLLOUT_ACTION_ADVANCE, "gw-b", 0),
        (R.ROLLOUT_ACTION_ADVANCE, "gw-a", 1), (R.ROLLOUT_ACTION_PROMOTE, "", 1)]  # fmt: skip
    advanced = history.transitions[2]
    assert advanced.reason == "gw-a is warm"
    assert dict(advanced.evidence) == {
        "replicas.live": 2.0, "replicas.switched": 2.0, "replicas.ready": 2.0,
        "switched.warmup_latency_ms": pytest.approx(0.3),
    }  # fmt: skip
    audit = [e for e in await client.list_audit_entries("churn") if e.action == "rollout.advance"]
    assert [json.loads(e.detail_json)["switched_replica"] for e in audit] == ["gw-a", "gw-b"]
    assert json.loads(audit[0].detail_json)["switched"] == ["gw-b", "gw-a"]


async def test_a_rolling_advance_without_live_replicas_is_refused(client: RegistryClient) -> None:
    await two_versions_deployed(client)
    await client.start_rollout("churn", 2, "rolling")
    with pytest.raises(FailedPrecondition, match="no live gateway replica to switch to v2"):
        await client.transition_rollout("churn", "advance")
    assert (await client.get_rollout("churn")).revision == 1  # nothing written


async def test_concurrent_advances_switch_one_replica_each(client: RegistryClient) -> None:
    await two_versions_deployed(client)
    for replica in ("gw-a", "gw-b", "gw-c"):
        await client.heartbeat(replica, f"{replica}:8001", BOTH_READY)
    started = await client.start_rollout("churn", 2, "rolling")
    outcomes = await asyncio.gather(
        *(client.transition_rollout("churn", "advance") for _ in range(2)), return_exceptions=True
    )
    assert not [o for o in outcomes if isinstance(o, Exception)]
    current = await client.get_rollout("churn")
    assert list(current.switched_replicas) == ["gw-a", "gw-b"]  # queued on the row lock
    assert current.revision == started.revision + 2 and current.step == 0


async def test_a_blue_green_switch_waits_until_every_live_replica_reports_the_candidate_ready(
    client: RegistryClient,
) -> None:
    await two_versions_deployed(client)
    await client.heartbeat("gw-a", "10.0.0.1:8001", BOTH_READY)
    await client.heartbeat("gw-b", "10.0.0.2:8001", BASELINE_ONLY)
    started = await client.start_rollout("churn", 2, "blue-green")
    with pytest.raises(FailedPrecondition, match="gw-b do not report v2 of 'churn' ready"):
        await client.transition_rollout("churn", R.ROLLOUT_ACTION_ADVANCE)
    assert (await client.get_rollout("churn")).revision == started.revision  # nothing written

    await client.heartbeat("gw-b", "10.0.0.2:8001", BOTH_READY)
    switched = await client.transition_rollout("churn", R.ROLLOUT_ACTION_ADVANCE)
    assert switched.step == 1
    deployment = await client.get_deployment("churn")
    assert [(r.version, r.role) for r in deployment.routes if r.weight == 1.0] == [
        (2, R.ROUTE_ROLE_PRIMARY)]  # fmt: skip
    (history,) = await client.list_rollouts("churn")
    assert history.transitions[-1].evidence["replicas.ready"] == 2.0
