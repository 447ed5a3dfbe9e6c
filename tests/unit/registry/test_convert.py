"""Protobuf requests to domain values and back, and the client's helpers."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from headwater.services.registry import convert
from headwater.shared import errors
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import error_for, feature, lineage, route, version_ref

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
