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
>>> rollout_policy(registry_pb2.RolloutPolicy(max_drop=0.0)).max_drop  # set, even to 0
0.0
>>> rollout_policy(registry_pb2.RolloutPolicy()).step_percents  # unset: the defaults
(5.0, 25.0, 50.0, 100.0)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from headwater.services.registry import deployments, domain, rollouts
from headwater.services.registry.rollout_policy import NewRollout, RolloutChange, RolloutPolicy
from headwater.shared import enums
from headwater.shared.pb import registry_pb2

_TASKS = enums.TASKS
_FEATURE_TYPES = enums.FEATURE_TYPES
_SOURCES = enums.SOURCES
_ROLES = enums.ROLES
_MODES = enums.MODES
_STRATEGIES = enums.STRATEGIES
_STATES = enums.ROLLOUT_STATES
_ACTIONS = enums.ROLLOUT_ACTIONS
#: The RolloutPolicy fields with presence (proto3 ``optional``): unset takes the default.
_POLICY_SCALARS = tuple(
    f.name for f in registry_pb2.RolloutPolicy.DESCRIPTOR.fields if f.name != "step_percents"
)


E = TypeVar("E", bound=int)


def _invert(mapping: Mapping[E, str]) -> dict[str, E]:
    return {name: number for number, name in mapping.items()}


_TASKS_BACK = _invert(_TASKS)
_FEATURE_TYPES_BACK = _invert(_FEATURE_TYPES)
_SOURCES_BACK = _invert(_SOURCES)
_ROLES_BACK = _invert(_ROLES)
_MODES_BACK = _invert(_MODES)
_STRATEGIES_BACK = _invert(_STRATEGIES)
_STATES_BACK = _invert(_STATES)
_ACTIONS_BACK = _invert(_ACTIONS)


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


def rollout_policy(message: registry_pb2.RolloutPolicy) -> RolloutPolicy:
    """The policy a request asks for: every field left unset takes its default."""
    given: dict[str, Any] = {
        name: getattr(message, name)
        for name in _POLICY_SCALARS
        if message.HasField(name)  # type: ignore[arg-type]  # names from the descriptor
    }
    if message.step_percents:
        given["step_percents"] = tuple(message.step_percents)
    return RolloutPolicy(**given)


def new_rollout(request: registry_pb2.StartRolloutRequest) -> NewRollout:
    """The rollout a StartRollout request asks for (an unknown strategy becomes '')."""
    return NewRollout(
        model=request.model,
        candidate_version=request.candidate_version,
        strategy=_STRATEGIES.get(request.strategy, ""),
        policy=rollout_policy(request.policy),
        reason=request.reason,
    )


def rollout_change(request: registry_pb2.TransitionRolloutRequest) -> RolloutChange:
    """The transition a TransitionRollout request asks for (an unknown action becomes '')."""
    return RolloutChange(
        model=request.model,
        action=_ACTIONS.get(request.action, ""),
        reason=request.reason,
        evidence=dict(request.evidence),
        expected_revision=request.expected_revision,
        rollout_id=request.rollout_id,
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


def rollout_of_row(row: Mapping[str, Any]) -> rollouts.Rollout:
    """Where the rollout of a rollouts row stands (the pure core's value)."""
    return rollouts.Rollout(
        model=row["model"],
        strategy=row["strategy"],
        baseline_version=row["baseline_version"],
        candidate_version=row["candidate_version"],
        policy=policy_of_json(row["policy"]),
        state=row["state"],
        step=row["step"],
        switched_replicas=tuple(row["switched_replicas"]),
    )


def rollout_message(row: Mapping[str, Any]) -> registry_pb2.Rollout:
    """A Rollout message of a rollouts row."""
    policy = policy_of_json(row["policy"])
    return registry_pb2.Rollout(
        id=row["id"],
        model=row["model"],
        strategy=_STRATEGIES_BACK[row["strategy"]],
        state=_STATES_BACK[row["state"]],
        baseline_version=row["baseline_version"],
        candidate_version=row["candidate_version"],
        step=row["step"],
        policy=registry_pb2.RolloutPolicy(**policy_json(policy)),
        revision=row["revision"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
        actor=row["actor"],
        step_started_at=timestamp(row["step_started_at"]),
        switched_replicas=row["switched_replicas"],
    )


def transition_message(row: Mapping[str, Any]) -> registry_pb2.RolloutTransition:
    """A RolloutTransition message of a rollout_transitions row ('' from_state: the start)."""
    return registry_pb2.RolloutTransition(
        rollout_id=row["rollout_id"],
        from_state=_STATES_BACK.get(row["from_state"], registry_pb2.ROLLOUT_STATE_UNSPECIFIED),
        to_state=_STATES_BACK[row["to_state"]],
        action=_ACTIONS_BACK[row["action"]],
        step=row["step"],
        actor=row["actor"],
        reason=row["reason"],
        evidence=row["evidence"],
        at=timestamp(row["at"]),
        revision=row["revision"],
        switched_replica=row["switched_replica"],
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


def policy_json(policy: RolloutPolicy) -> dict[str, Any]:
    """The policy column of a rollout (every field set).

    >>> policy_json(RolloutPolicy())["step_percents"]
    [5.0, 25.0, 50.0, 100.0]
    """
    plain = dataclasses.asdict(policy)
    plain["step_percents"] = list(policy.step_percents)
    return plain


def policy_of_json(plain: Mapping[str, Any]) -> RolloutPolicy:
    """The policy of a rollout's policy column (fields it lacks take today's defaults)."""
    known = {f.name for f in dataclasses.fields(RolloutPolicy)}
    given = {name: value for name, value in plain.items() if name in known}
    if "step_percents" in given:
        given["step_percents"] = tuple(float(p) for p in given["step_percents"])
    return RolloutPolicy(**given)
