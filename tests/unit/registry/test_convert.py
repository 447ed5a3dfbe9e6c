"""Protobuf requests to domain values and back, and the client's helpers."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from headwater.services.registry import convert
from headwater.services.registry.rollout_policy import RolloutChange, RolloutPolicy
from headwater.shared import errors
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import (
    error_for,
    feature,
    lineage,
    rollout_policy,
    route,
    version_ref,
)

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_create_model_request_becomes_a_domain_model() -> None:
    request = registry_pb2.CreateModelRequest(
        name="churn",
        task=registry_pb2.TASK_MULTICLASS,
        features=[feature("age", "int"), feature("plan", "str", required=False)],
        tags={"team": "growth"},
    )
    model = convert.new_model(request)
    assert (model.name, model.task, dict(model.tags)) == ("churn", "multiclass", {"team": "growth"})
    assert [(f.name, f.type, f.required) for f in model.features] == [
        ("age", "int", True),
        ("plan", "str", False),
    ]


def test_unspecified_enums_become_empty_or_defaults() -> None:
    request = registry_pb2.SetDeploymentRequest(model="m", routes=[registry_pb2.Route(version=1)])
    deployment = convert.new_deployment(request)
    assert (deployment.mode, deployment.strategy) == ("live", "direct")
    assert deployment.routes[0].role == ""  # refused by the domain, naming the role
    assert convert.lineage(registry_pb2.Lineage()).source == "spec"


def test_version_ref_selects_number_or_alias() -> None:
    assert convert.version_ref(version_ref("m", 3)) == ("m", 3)
    assert convert.version_ref(version_ref("m", "champion")) == ("m", "champion")
    assert convert.version_ref(registry_pb2.VersionRef(model="m")) == ("m", 0)


def test_rows_round_trip_to_messages() -> None:
    model_row = {
        "name": "m",
        "task": "binary",
        "features": [{"name": "x", "type": "float", "required": True}],
        "description": "d",
        "tags": {"a": "b"},
        "created_at": NOW,
        "latest_version": 2,
    }
    model = convert.model_message(model_row, {"champion": 2})
    assert model.task == registry_pb2.TASK_BINARY and model.aliases["champion"] == 2
    assert model.created_at.ToDatetime(dt.UTC) == NOW

    deployment = convert.deployment_message(
        {
            "model": "m",
            "routes": [{"version": 2, "weight": 1.0, "role": "primary"}],
            "mode": "pinned",
            "revision": 4,
            "updated_at": NOW,
            "strategy": "direct",
        }
    )
    assert list(deployment.routes) == [route(2)]
    assert deployment.mode == registry_pb2.SERVING_MODE_PINNED


def test_client_helpers_build_messages_and_refuse_unknown_names() -> None:
    assert lineage(1, "batch", seed=4).source == registry_pb2.VERSION_SOURCE_BATCH
    assert route(1, 0.5, "shadow").role == registry_pb2.ROUTE_ROLE_SHADOW
    with pytest.raises(errors.InvalidInput, match="unknown feature type 'decimal'"):
        feature("x", "decimal")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.ModelNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidInput),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.DATA_LOSS, errors.ArtifactIntegrityError),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.Unavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.INTERNAL, errors.HeadwaterError),
    ],
)
def test_status_codes_map_back_to_headwater_errors(code: grpc.StatusCode, error: type) -> None:
    mapped = error_for(code, "details")
    assert type(mapped) is error and str(mapped) == "details"


def test_rollout_requests_become_domain_values_with_default_policies() -> None:
    request = registry_pb2.StartRolloutRequest(
        model="m", candidate_version=2, strategy=registry_pb2.ROLLOUT_STRATEGY_BLUE_GREEN,
        policy=rollout_policy([10, 100], max_drop=0.0, min_samples=50), reason="why",
    )  # fmt: skip
    draft = convert.new_rollout(request)
    assert (draft.model, draft.candidate_version, draft.strategy) == ("m", 2, "blue-green")
    assert draft.policy == RolloutPolicy(step_percents=(10.0, 100.0), max_drop=0.0, min_samples=50)
    assert convert.new_rollout(registry_pb2.StartRolloutRequest()).strategy == ""
    change = convert.rollout_change(
        registry_pb2.TransitionRolloutRequest(
            model="m", action=registry_pb2.ROLLOUT_ACTION_ROLLBACK, evidence={"n": 3.0},
            expected_revision=4, rollout_id="r",
        )
    )  # fmt: skip
    assert change == RolloutChange("m", "rollback", "", {"n": 3.0}, 4, "r")


def test_rollout_rows_become_messages_with_every_policy_field_set() -> None:
    policy = RolloutPolicy(step_percents=(20.0, 100.0), alpha=0.1)
    row = {
        "id": "r1", "model": "m", "strategy": "shadow", "state": "rolled_back",
        "baseline_version": 1, "candidate_version": 2, "step": 1,
        "policy": convert.policy_json(policy), "revision": 3, "actor": "ops",
        "created_at": NOW, "updated_at": NOW, "step_started_at": NOW, "switched_replicas": [],
    }  # fmt: skip
    message = convert.rollout_message(row)
    assert message.strategy == registry_pb2.ROLLOUT_STRATEGY_SHADOW
    assert message.state == registry_pb2.ROLLOUT_STATE_ROLLED_BACK
    assert convert.rollout_policy(message.policy) == policy
    assert all(message.policy.HasField(name) for name in ("max_drop", "shadow_percent"))
    assert convert.rollout_of_row(row).policy == policy
    assert convert.policy_of_json({"alpha": 0.2, "retired": 1}) == RolloutPolicy(alpha=0.2)
    transition = convert.transition_message({
        "rollout_id": "r1", "from_state": "", "to_state": "progressing", "action": "start",
        "step": 0, "actor": "ops", "reason": "", "evidence": {}, "at": NOW, "revision": 1,
        "switched_replica": "",
    })  # fmt: skip
    assert transition.from_state == registry_pb2.ROLLOUT_STATE_UNSPECIFIED
    assert transition.action == registry_pb2.ROLLOUT_ACTION_START
