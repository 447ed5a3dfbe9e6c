"""Replicas between protobuf messages, domain values and database rows.

>>> beat = heartbeat_of(registry_pb2.HeartbeatRequest(
...     replica_id="gw-1", address="h:8001",
...     versions=[registry_pb2.ReplicaVersion(model="m", version=2, ready=True)]))
>>> beat.versions
(ReplicaVersion(model='m', version=2, ready=True, warmup_latency_ms=0.0),)
>>> versions_json(beat.versions)
[{'model': 'm', 'version': 2, 'ready': True, 'warmup_latency_ms': 0.0}]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from headwater.services.registry.convert import timestamp
from headwater.services.registry.replicas import (
    Assignment,
    Heartbeat,
    Replica,
    ReplicaVersion,
    RollingRollout,
)
from headwater.shared.pb import registry_pb2


def heartbeat_of(request: registry_pb2.HeartbeatRequest) -> Heartbeat:
    """The heartbeat a Heartbeat request reports."""
    return Heartbeat(
        replica_id=request.replica_id,
        address=request.address,
        versions=tuple(
            ReplicaVersion(v.model, v.version, v.ready, v.warmup_latency_ms)
            for v in request.versions
        ),
    )


def versions_json(versions: Iterable[ReplicaVersion]) -> list[dict[str, Any]]:
    """The versions column of a replica."""
    return [dataclasses.asdict(v) for v in versions]


def versions_of_json(versions: Iterable[Mapping[str, Any]]) -> tuple[ReplicaVersion, ...]:
    """The versions of a replica's versions column."""
    return tuple(ReplicaVersion(**v) for v in versions)


def replica_of_row(row: Mapping[str, Any]) -> Replica:
    """The replica of a replicas row."""
    return Replica(
        id=row["id"],
        address=row["address"],
        last_heartbeat_at=row["last_heartbeat_at"],
        versions=versions_of_json(row["versions"]),
        first_heartbeat_at=row["first_heartbeat_at"],
    )


def rolling_of_row(row: Mapping[str, Any]) -> RollingRollout:
    """The rolling rollout of a :func:`.replica_repository.fetch_rolling_rollouts` row."""
    return RollingRollout(
        id=row["id"],
        model=row["model"],
        baseline_version=row["baseline_version"],
        candidate_version=row["candidate_version"],
        step=row["step"],
        switched=tuple(row["switched_replicas"]),
        deployment_revision=row["deployment_revision"],
    )


def assignment_message(assignment: Assignment) -> registry_pb2.ReplicaAssignment:
    """A ReplicaAssignment message."""
    return registry_pb2.ReplicaAssignment(**dataclasses.asdict(assignment))


def replica_message(
    replica: Replica, assignments: Iterable[Assignment], model: str = ""
) -> registry_pb2.Replica:
    """A Replica message: its versions and assignments (of ``model`` only, when given)."""
    message = registry_pb2.Replica(
        id=replica.id,
        address=replica.address,
        last_heartbeat_at=timestamp(replica.last_heartbeat_at),
        versions=[
            registry_pb2.ReplicaVersion(**dataclasses.asdict(v))
            for v in replica.versions
            if not model or v.model == model
        ],
        assignments=[assignment_message(a) for a in assignments if not model or a.model == model],
    )
    if replica.first_heartbeat_at is not None:
        message.first_heartbeat_at.CopyFrom(timestamp(replica.first_heartbeat_at))
    return message
