"""Translation between protobuf messages, domain values and database rows.

Requests become domain values (enums become the domain's strings); database
rows become response messages. Nothing here validates beyond the shape of
an enum: :mod:`.domain` owns the rules.

>>> task_from_proto(registry_pb2.TASK_BINARY)
'binary'
>>> task_from_proto(registry_pb2.TASK_UNSPECIFIED)
''
>>> registry_pb2.RouteRole.Name(role_to_proto("canary"))
'ROUTE_ROLE_CANARY'
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from headwater.services.registry import deployments, domain
from headwater.shared import enums
from headwater.shared.pb import registry_pb2

_TASKS = enums.TASKS
_FEATURE_TYPES = enums.FEATURE_TYPES
_SOURCES = enums.SOURCES
_ROLES = enums.ROLES
_MODES = enums.MODES


E = TypeVar("E", bound=int)


def _invert(mapping: Mapping[E, str]) -> dict[str, E]:
    return {name: number for number, name in mapping.items()}


_TASKS_BACK = _invert(_TASKS)
_FEATURE_TYPES_BACK = _invert(_FEATURE_TYPES)
_SOURCES_BACK = _invert(_SOURCES)
_ROLES_BACK = _invert(_ROLES)
_MODES_BACK = _invert(_MODES)


def task_from_proto(task: registry_pb2.Task.ValueType) -> str:
    """Domain name of a Task enum value ('' when unspecified or unknown)."""
    return _TASKS.get(task, "")


def role_to_proto(role: str) -> registry_pb2.RouteRole.ValueType:
    """RouteRole enum value of a domain role name."""
    return _ROLES_BACK[role]


def timestamp(moment: dt.datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    stamp = Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


# --- requests -> domain ----------------------------------------------------------


def new_model(request: registry_pb2.CreateModelRequest) -> domain.NewModel:
    """The model a CreateModel request asks for."""
    return domain.NewModel(
        name=request.name,
        task=task_from_proto(request.task),
        features=tuple(
            domain.Feature(f.name, _FEATURE_TYPES.get(f.type, ""), f.required)
            for f in request.features
        ),
        description=request.description,
        tags=dict(request.tags),
    )


def lineage(message: registry_pb2.Lineage) -> domain.Lineage:
    """Domain lineage of a Lineage message (unspecified source means 'spec')."""
    return domain.Lineage(
        parent_version=message.parent_version,
        source=_SOURCES.get(message.source, "spec"),
        offsets=tuple(
            domain.OffsetRange(r.topic, r.partition, r.first_offset, r.last_offset)
            for r in message.offsets
        ),
        example_count=message.example_count,
        metrics=dict(message.metrics),
        seed=message.seed,
    )


def new_version(request: registry_pb2.CreateVersionRequest) -> domain.NewVersion:
    """The version a CreateVersion request asks to register."""
    return domain.NewVersion(
        model=request.model,
        spec_json=request.spec_json,
        lineage=lineage(request.lineage),
        artifact=request.artifact,
        artifact_signature=request.artifact_signature,
        description=request.description,
        tags=dict(request.tags),
    )


def new_deployment(request: registry_pb2.SetDeploymentRequest) -> deployments.NewDeployment:
    """The deployment a SetDeployment request asks for (unspecified mode means live)."""
    return deployments.NewDeployment(
        model=request.model,
        routes=tuple(
            deployments.Route(r.version, r.weight, _ROLES.get(r.role, "")) for r in request.routes
        ),
        mode=_MODES.get(request.mode, "live"),
        strategy=request.strategy or deployments.DEFAULT_STRATEGY,
    )


def version_ref(ref: registry_pb2.VersionRef) -> tuple[str, int | str]:
    """The model and the version number or alias a VersionRef selects."""
    selector = ref.WhichOneof("selector")
    if selector == "version":
        return ref.model, ref.version
    if selector == "alias":
        return ref.model, ref.alias
    return ref.model, 0


# --- rows -> messages ----------------------------------------------------------------


def model_message(row: Mapping[str, Any], aliases: Mapping[str, int]) -> registry_pb2.Model:
    """A Model message of a models row and its aliases."""
    return registry_pb2.Model(
        name=row["name"],
        task=_TASKS_BACK[row["task"]],
        features=[
            registry_pb2.Feature(
                name=f["name"],
                type=_FEATURE_TYPES_BACK[f["type"]],
                required=f["required"],
            )
            for f in row["features"]
        ],
        description=row["description"],
        tags=row["tags"],
        created_at=timestamp(row["created_at"]),
        latest_version=row["latest_version"],
        aliases=dict(aliases),
    )


def version_message(row: Mapping[str, Any]) -> registry_pb2.ModelVersion:
    """A ModelVersion message of a versions row."""
    return registry_pb2.ModelVersion(
        model=row["model"],
        version=row["version"],
        spec_json=row["spec_json"],
        lineage=registry_pb2.Lineage(
            parent_version=row["parent_version"],
            source=_SOURCES_BACK[row["source"]],
            offsets=[registry_pb2.OffsetRange(**r) for r in row["offsets"]],
            example_count=row["example_count"],
            metrics=row["metrics"],
            seed=row["seed"],
        ),
        artifact=registry_pb2.Artifact(
            sha256=row["artifact_sha256"],
            size_bytes=row["artifact_size_bytes"],
            signature=row["artifact_signature"],
            format=row["artifact_format"],
        ),
        description=row["description"],
        tags=row["tags"],
        created_at=timestamp(row["created_at"]),
    )


def deployment_message(row: Mapping[str, Any]) -> registry_pb2.Deployment:
    """A Deployment message of a deployments row."""
    return registry_pb2.Deployment(
        model=row["model"],
        routes=[
            registry_pb2.Route(
                version=r["version"], weight=r["weight"], role=_ROLES_BACK[r["role"]]
            )
            for r in row["routes"]
        ],
        mode=_MODES_BACK[row["mode"]],
        revision=row["revision"],
        updated_at=timestamp(row["updated_at"]),
        strategy=row["strategy"],
    )


def audit_message(row: Mapping[str, Any]) -> registry_pb2.AuditEntry:
    """An AuditEntry message of an audit_log row."""
    return registry_pb2.AuditEntry(
        id=row["id"],
        actor=row["actor"],
        action=row["action"],
        model=row["model"],
        detail_json=json.dumps(row["detail"], sort_keys=True, separators=(",", ":")),
        occurred_at=timestamp(row["occurred_at"]),
    )


# --- domain -> JSON columns ---------------------------------------------------------------


def features_json(features: tuple[domain.Feature, ...]) -> list[dict[str, Any]]:
    """The ordered features column of a model."""
    return [{"name": f.name, "type": f.type, "required": f.required} for f in features]


def offsets_json(offsets: tuple[domain.OffsetRange, ...]) -> list[dict[str, Any]]:
    """The offsets column of a version's lineage."""
    return [
        {
            "topic": r.topic,
            "partition": r.partition,
            "first_offset": r.first_offset,
            "last_offset": r.last_offset,
        }
        for r in offsets
    ]


def routes_json(routes: tuple[deployments.Route, ...]) -> list[dict[str, Any]]:
    """The routes column of a deployment."""
    return [{"version": r.version, "weight": r.weight, "role": r.role} for r in routes]
