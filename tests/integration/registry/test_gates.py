"""Promotion gates against a real PostgreSQL and broker: gates, evaluations, refusals, audit."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from headwater.shared.errors import FailedPrecondition, InvalidInput, ModelNotFound
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.registry_gates_client import promotion_gates
from headwater.shared.settings import KafkaSettings
from tests.integration.registry.conftest import (
    FEATURES,
    read_all_events,
    two_versions_deployed,
    wait_all_published,
)

pytestmark = pytest.mark.integration

K = events_pb2.RegistryEventKind
R = registry_pb2
T0 = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
SELECTS_ZIP = (
    '{"pipeline": [{"component": "compose.Select", "params": {"keys": ["x1", "zip"]}},'
    ' {"component": "linear_model.LogisticRegression"}]}'
)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


async def gated(client: RegistryClient, threshold: float = 0.85) -> None:
    """Versions 1 and 2 of churn, 1 deployed, an accuracy gate over 500 examples."""
    await two_versions_deployed(client)
    await client.set_promotion_gates(
        "churn", promotion_gates(min_score=("accuracy", threshold), min_examples=500)
    )


async def refusals(client: RegistryClient) -> list[dict[str, object]]:
    entries = await client.list_audit_entries("churn")
    return [json.loads(e.detail_json) for e in entries if e.action == "gates.refused"]


async def test_gates_are_set_read_audited_and_published(
    client: RegistryClient, database_url: str, kafka_settings: KafkaSettings
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    defaults = await client.get_promotion_gates("churn")
    assert (defaults.model, defaults.revision, defaults.require_schema_compatible) == (
        "churn", 0, True)  # fmt: skip
    assert not defaults.HasField("min_score") and not defaults.HasField("max_warmup_latency_ms")

    wanted = promotion_gates(min_score=("accuracy", 0.85), min_examples=500,
                             max_warmup_latency_ms=5)  # fmt: skip
    stored = await client.set_promotion_gates("churn", wanted)
    assert (stored.min_score.metric, stored.min_score.threshold) == ("accuracy", 0.85)
    assert (stored.min_examples, stored.max_warmup_latency_ms) == (500, 5.0)
    assert (stored.revision, stored.updated_by) == (1, "tester")
    assert await client.get_promotion_gates("churn") == stored

    loosened = await client.set_promotion_gates(
        "churn", promotion_gates(require_schema_compatible=False)
    )
    assert loosened.revision == 2 and not loosened.require_schema_compatible
    assert not loosened.HasField("min_score") and loosened.min_examples == 0  # replaced, not merged

    audit = [e for e in await client.list_audit_entries("churn") if e.action == "gates.set"]
    assert [json.loads(e.detail_json)["revision"] for e in audit] == [2, 1]
    assert json.loads(audit[1].detail_json)["min_score"] == {"metric": "accuracy",
                                                             "threshold": 0.85}  # fmt: skip
    await wait_all_published(database_url)
    events = [e for _, e in await read_all_events(kafka_settings)
              if e.kind == K.REGISTRY_EVENT_KIND_PROMOTION_GATES_CHANGED]  # fmt: skip
    assert [e.promotion_gates for e in events] == [stored, loosened]
    assert all(e.model == "churn" and e.actor == "tester" for e in events)


async def test_gates_that_do_not_suit_the_model_are_refused(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    with pytest.raises(InvalidInput, match="binary model reads accuracy or rolling_accuracy"):
        await client.set_promotion_gates("churn", promotion_gates(min_score=("mae", 0.2)))
    with pytest.raises(InvalidInput, match="max_warmup_latency_ms must be in"):
        await client.set_promotion_gates("churn", promotion_gates(max_warmup_latency_ms=-1))
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        await client.set_promotion_gates("nope", promotion_gates())
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        await client.get_promotion_gates("nope")
    assert (await client.get_promotion_gates("churn")).revision == 0


async def test_the_latest_evaluation_per_metric_and_source_is_kept(
    client: RegistryClient,
) -> None:
    await two_versions_deployed(client)
    before = len(await client.list_audit_entries("churn"))
    first = await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.8,
                                           examples=100, at=at(10))  # fmt: skip
    assert (first.model, first.version, first.value, first.examples) == ("churn", 2, 0.8, 100)
    assert first.at.ToDatetime(tzinfo=dt.UTC) == at(10) and first.recorded_at.seconds > 0
    stale = await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.1, at=at(5))
    assert stale == first  # an older report changes nothing
    newer = await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.9,
                                           examples=200, at=at(20))  # fmt: skip
    await client.record_evaluation("churn", 2, "gateway:gw-1", "warmup_latency_ms", 3.5)
    await client.record_evaluation("churn", 2, "trainer", "rolling_accuracy", 0.95, at=at(20))
    await client.record_evaluation("churn", 1, "trainer", "accuracy", 0.7, at=at(20))

    listed = await client.list_evaluations("churn", 2)
    assert [(e.metric, e.source, e.value) for e in listed] == [
        ("accuracy", "trainer", 0.9), ("rolling_accuracy", "trainer", 0.95),
        ("warmup_latency_ms", "gateway:gw-1", 3.5)]  # fmt: skip
    assert listed[0] == newer
    assert len(await client.list_audit_entries("churn")) == before  # frequent: not audited

    with pytest.raises(ModelNotFound, match="model 'churn' has no version 9"):
        await client.record_evaluation("churn", 9, "trainer", "accuracy", 0.9)
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        await client.list_evaluations("nope", 1)
    with pytest.raises(InvalidInput, match="ahead of the registry's clock"):
        await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.9,
                                       at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))


async def test_a_low_score_refuses_the_start_and_the_refusal_is_audited(
    client: RegistryClient, database_url: str, kafka_settings: KafkaSettings
) -> None:
    await gated(client)
    deployment = await client.get_deployment("churn")
    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.81, examples=1200)

    with pytest.raises(FailedPrecondition) as refused:
        await client.start_rollout("churn", 2, "canary")
    assert str(refused.value) == (
        "version 2 of 'churn' cannot start a canary rollout: gate min_score failed: accuracy "
        "0.81 < 0.85 required (short by 0.04) over 1200 examples (headwater gates show churn)")
    with pytest.raises(ModelNotFound, match="has no rollout"):
        await client.get_rollout("churn")  # nothing written
    assert await client.get_deployment("churn") == deployment

    (detail,) = await refusals(client)
    assert (detail["action"], detail["strategy"], detail["version"]) == ("start", "canary", 2)
    assert detail["baseline_version"] == 1 and detail["message"] == str(refused.value)
    results = {r["gate"]: r for r in detail["results"]}  # type: ignore[attr-defined]
    assert list(results) == ["schema_compatible", "min_score", "min_examples"]
    assert results["min_score"]["passed"] is False and results["min_score"]["observed"] == 0.81
    assert results["min_score"]["margin"] == pytest.approx(-0.04)
    assert results["min_examples"]["passed"] is True and results["min_examples"]["margin"] == 700
    assert detail["gates"]["min_score"] == {"metric": "accuracy", "threshold": 0.85}  # type: ignore[index]

    with pytest.raises(FailedPrecondition, match=r"short by 0\.04"):
        await client.start_rollout("churn", 2, "canary")
    assert len(await refusals(client)) == 1  # the same refusal again: audited once
    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.82, examples=1300)
    with pytest.raises(FailedPrecondition, match=r"short by 0\.03"):
        await client.start_rollout("churn", 2, "canary")
    assert len(await refusals(client)) == 2

    await wait_all_published(database_url)
    kinds = [e.kind for _, e in await read_all_events(kafka_settings)]
    assert K.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED not in kinds


async def test_promote_is_refused_until_a_better_evaluation_arrives(
    client: RegistryClient,
) -> None:
    await gated(client)
    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.9, examples=600, at=at(1))
    started = await client.start_rollout("churn", 2, "canary")
    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.84, examples=900, at=at(2))

    with pytest.raises(FailedPrecondition, match=(
        r"version 2 of 'churn' cannot be promoted: gate min_score failed: accuracy 0.84 < 0.85 "
        r"required \(short by 0.01\) over 900 examples"
    )):  # fmt: skip
        await client.transition_rollout("churn", "promote", expected_revision=started.revision)
    still = await client.get_rollout("churn")
    assert (still.state, still.revision) == (R.ROLLOUT_STATE_PROGRESSING, started.revision)
    (detail,) = await refusals(client)
    assert (detail["action"], detail["rollout_id"]) == ("promote", started.id)

    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.88, examples=1500, at=at(3))
    promoted = await client.transition_rollout("churn", "promote", expected_revision=still.revision)
    assert promoted.state == R.ROLLOUT_STATE_PROMOTED
    assert [r.version for r in (await client.get_deployment("churn")).routes] == [2]
    assert len(await refusals(client)) == 1


async def test_other_moves_of_a_rollout_ignore_the_gates(client: RegistryClient) -> None:
    await gated(client)
    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.9, examples=600, at=at(1))
    await client.start_rollout("churn", 2, "canary")
    await client.record_evaluation("churn", 2, "trainer", "accuracy", 0.1, examples=700, at=at(2))
    assert (await client.transition_rollout("churn", "advance")).step == 1
    assert (await client.transition_rollout("churn", "pause")).state == R.ROLLOUT_STATE_PAUSED
    with pytest.raises(FailedPrecondition, match="is paused: resume it"):  # the state comes first
        await client.transition_rollout("churn", "promote")
    back = await client.transition_rollout("churn", "rollback")
    assert back.state == R.ROLLOUT_STATE_ROLLED_BACK and await refusals(client) == []


async def test_a_candidate_naming_an_undeclared_feature_fails_the_schema_gate(
    client: RegistryClient,
) -> None:
    await two_versions_deployed(client)
    await client.create_version("churn", SELECTS_ZIP)
    with pytest.raises(FailedPrecondition, match=(
        "cannot start a shadow rollout: gate schema_compatible failed: version 3 names a feature "
        "the model's schema does not declare: 'zip'"
    )):  # fmt: skip
        await client.start_rollout("churn", 3, "shadow")
    await client.set_promotion_gates("churn", promotion_gates(require_schema_compatible=False))
    assert (await client.start_rollout("churn", 3, "shadow")).candidate_version == 3


async def test_the_latency_gate_judges_every_gateway_replica(client: RegistryClient) -> None:
    await two_versions_deployed(client)
    await client.set_promotion_gates("churn", promotion_gates(max_warmup_latency_ms=5))
    with pytest.raises(FailedPrecondition, match="no warm-up latency of version 2 reported yet"):
        await client.start_rollout("churn", 2, "blue-green")
    await client.record_evaluation("churn", 2, "gateway:gw-1", "warmup_latency_ms", 2.0)
    await client.record_evaluation("churn", 2, "gateway:gw-2", "warmup_latency_ms", 6.5)
    with pytest.raises(FailedPrecondition, match=(
        r"warmup_latency_ms 6.5 > 5 allowed \(over by 1.5\) on gateway:gw-2, the worst of 2"
    )):  # fmt: skip
        await client.start_rollout("churn", 2, "blue-green")
    await client.record_evaluation("churn", 2, "gateway:gw-2", "warmup_latency_ms", 4.0)
    assert (await client.start_rollout("churn", 2, "blue-green")).state == R.ROLLOUT_STATE_PENDING
    assert len(await refusals(client)) == 2
