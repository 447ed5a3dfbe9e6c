"""An async client of the registry's gRPC API, for services and the CLI.

Every call has a deadline. Reads are retried, a bounded number of times and
within the same deadline, when the registry is UNAVAILABLE; writes are never
retried (a write whose answer was lost may have committed): see
:mod:`headwater.shared.registry_calls`. The rollout and gateway replica calls
live in :mod:`headwater.shared.rollout_calls` (the client inherits them).
Status codes come back as headwater's own errors: NOT_FOUND is :class:`ModelNotFound`,
INVALID_ARGUMENT :class:`InvalidInput`, ALREADY_EXISTS :class:`AlreadyExists`,
DATA_LOSS :class:`ArtifactIntegrityError`, UNAVAILABLE and DEADLINE_EXCEEDED
:class:`Unavailable`, and so on.

    async with RegistryClient("127.0.0.1:50051") as registry:
        await registry.create_model("churn", "binary", [("age", "int"), ("plan", "str")])
        version = await registry.create_version("churn", spec_json)
        await registry.deploy("churn", version.version)
        rollout = await registry.start_rollout("churn", 2, "canary", rollout_policy(interval_s=30))
        await registry.transition_rollout("churn", "pause", reason="holiday freeze")

>>> import grpc
>>> error_for(grpc.StatusCode.NOT_FOUND, "no model named 'x'")
ModelNotFound("no model named 'x'")
>>> route(2, 0.1, "canary")
version: 2
weight: 0.1
role: ROUTE_ROLE_CANARY
<BLANKLINE>
>>> rollout_policy(step_percents=[10, 100], max_drop=0.0).HasField("max_drop")
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeAlias

from headwater.shared import enums
from headwater.shared.grpc_errors import error_for
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_calls import (
    ACTOR_METADATA_KEY,
    DEFAULT_MAX_MESSAGE_BYTES,
    enum_value,
)
from headwater.shared.registry_gates_client import PromotionGateCalls
from headwater.shared.rollout_calls import RolloutCalls, replica_version, rollout_policy

__all__ = [
    "ACTOR_METADATA_KEY",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "RegistryClient",
    "error_for",
    "feature",
    "lineage",
    "replica_version",
    "rollout_policy",
    "route",
    "version_ref",
]

_TASKS = {name: value for value, name in enums.TASKS.items()}
_FEATURE_TYPES = {name: value for value, name in enums.FEATURE_TYPES.items()}
_ROLES = {name: value for value, name in enums.ROLES.items()}
_MODES = {name: value for value, name in enums.MODES.items()}
_SOURCES = {name: value for value, name in enums.SOURCES.items()}

FeatureArg: TypeAlias = registry_pb2.Feature | tuple[str, str] | tuple[str, str, bool]
RouteArg: TypeAlias = registry_pb2.Route | tuple[int, float, str]


def feature(name: str, type: str | int, required: bool = True) -> registry_pb2.Feature:
    """A Feature message; ``type`` is float, int, str or bool (or the enum value)."""
    return registry_pb2.Feature(
        name=name, type=enum_value("feature type", type, _FEATURE_TYPES), required=required
    )


def route(version: int, weight: float = 1.0, role: str | int = "primary") -> registry_pb2.Route:
    """A Route message; ``role`` is primary, canary, shadow or challenger (or the enum value)."""
    return registry_pb2.Route(
        version=version, weight=weight, role=enum_value("route role", role, _ROLES)
    )


def lineage(
    parent_version: int = 0,
    source: str | int = "spec",
    offsets: Iterable[registry_pb2.OffsetRange] = (),
    example_count: int = 0,
    metrics: Mapping[str, float] | None = None,
    seed: int = 0,
) -> registry_pb2.Lineage:
    """A Lineage message; ``source`` is spec, online-snapshot or batch (or the enum value)."""
    return registry_pb2.Lineage(
        parent_version=parent_version,
        source=enum_value("version source", source, _SOURCES),
        offsets=list(offsets),
        example_count=example_count,
        metrics=dict(metrics or {}),
        seed=seed,
    )


def version_ref(model: str, ref: int | str) -> registry_pb2.VersionRef:
    """A VersionRef selecting a version number (int) or an alias (str)."""
    if isinstance(ref, int):
        return registry_pb2.VersionRef(model=model, version=ref)
    return registry_pb2.VersionRef(model=model, alias=ref)


def _feature_of(arg: FeatureArg) -> registry_pb2.Feature:
    return arg if isinstance(arg, registry_pb2.Feature) else feature(*arg)


def _route_of(arg: RouteArg) -> registry_pb2.Route:
    return arg if isinstance(arg, registry_pb2.Route) else route(*arg)


class RegistryClient(RolloutCalls, PromotionGateCalls):
    """Async client of ``headwater.registry.v1.Registry``.

    Arguments and calling rules: :class:`~headwater.shared.registry_calls.RegistryCalls`;
    the rollout and gateway replica calls: :class:`~headwater.shared.rollout_calls.RolloutCalls`;
    the promotion gate calls (gates, evaluations):
    :class:`~headwater.shared.registry_gates_client.PromotionGateCalls`.
    Use as an async context manager, or call :meth:`close` when done.
    """

    # --- models -------------------------------------------------------------------

    async def create_model(
        self,
        name: str,
        task: str | int,
        features: Iterable[FeatureArg],
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> registry_pb2.Model:
        """Create a model; features are Feature messages or (name, type[, required]) tuples."""
        request = registry_pb2.CreateModelRequest(
            name=name,
            task=enum_value("task", task, _TASKS),
            features=[_feature_of(f) for f in features],
            description=description,
            tags=dict(tags or {}),
        )
        return await self._write(self._stub.CreateModel, request)

    async def get_model(self, name: str) -> registry_pb2.Model:
        """One model with its aliases and latest version number."""
        return await self._read(self._stub.GetModel, registry_pb2.GetModelRequest(name=name))

    async def list_models(self) -> list[registry_pb2.Model]:
        """Every model, by name."""
        response = await self._read(self._stub.ListModels, registry_pb2.ListModelsRequest())
        return list(response.models)

    # --- versions -----------------------------------------------------------------

    async def create_version(
        self,
        model: str,
        spec_json: str,
        lineage: registry_pb2.Lineage | None = None,
        *,
        artifact: bytes = b"",
        artifact_signature: str = "",
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> registry_pb2.ModelVersion:
        """Register a version (built by the registry from the spec when no artifact is given)."""
        request = registry_pb2.CreateVersionRequest(
            model=model,
            spec_json=spec_json,
            lineage=lineage,
            artifact=artifact,
            artifact_signature=artifact_signature,
            description=description,
            tags=dict(tags or {}),
        )
        return await self._write(self._stub.CreateVersion, request)

    async def get_version(self, model: str, ref: int | str) -> registry_pb2.ModelVersion:
        """One version by number (int) or alias (str)."""
        request = registry_pb2.GetVersionRequest(ref=version_ref(model, ref))
        return await self._read(self._stub.GetVersion, request)

    async def list_versions(self, model: str) -> list[registry_pb2.ModelVersion]:
        """Every version of a model, oldest first."""
        request = registry_pb2.ListVersionsRequest(model=model)
        return list((await self._read(self._stub.ListVersions, request)).versions)

    async def get_artifact(self, model: str, ref: int | str) -> registry_pb2.GetArtifactResponse:
        """A version and its artifact bytes (verified by the registry; verify them again)."""
        request = registry_pb2.GetArtifactRequest(ref=version_ref(model, ref))
        return await self._read(self._stub.GetArtifact, request)

    # --- aliases ------------------------------------------------------------------

    async def set_alias(self, model: str, alias: str, version: int) -> registry_pb2.Model:
        """Point an alias at a version."""
        request = registry_pb2.SetAliasRequest(model=model, alias=alias, version=version)
        return await self._write(self._stub.SetAlias, request)

    async def delete_alias(self, model: str, alias: str) -> registry_pb2.Model:
        """Delete an alias."""
        request = registry_pb2.DeleteAliasRequest(model=model, alias=alias)
        return await self._write(self._stub.DeleteAlias, request)

    # --- deployments --------------------------------------------------------------

    async def set_deployment(
        self,
        model: str,
        routes: Iterable[RouteArg],
        mode: str | int = "live",
        strategy: str = "direct",
    ) -> registry_pb2.Deployment:
        """Set a model's routes; routes are Route messages or (version, weight, role) tuples."""
        request = registry_pb2.SetDeploymentRequest(
            model=model,
            routes=[_route_of(r) for r in routes],
            mode=enum_value("serving mode", mode, _MODES),
            strategy=strategy,
        )
        return await self._write(self._stub.SetDeployment, request)

    async def deploy(
        self, model: str, version: int, mode: str | int = "live"
    ) -> registry_pb2.Deployment:
        """Send all of a model's traffic to one version (one primary route at 100 %)."""
        return await self.set_deployment(model, [route(version)], mode=mode)

    async def get_deployment(self, model: str) -> registry_pb2.Deployment:
        """A model's deployment (ModelNotFound when it has none)."""
        request = registry_pb2.GetDeploymentRequest(model=model)
        return await self._read(self._stub.GetDeployment, request)

    async def list_deployments(self) -> list[registry_pb2.Deployment]:
        """Every deployment, by model."""
        request = registry_pb2.ListDeploymentsRequest()
        return list((await self._read(self._stub.ListDeployments, request)).deployments)

    # --- audit --------------------------------------------------------------------

    async def list_audit_entries(
        self, model: str = "", limit: int = 100
    ) -> list[registry_pb2.AuditEntry]:
        """The newest audit entries, newest first (of one model, or all when empty)."""
        request = registry_pb2.ListAuditEntriesRequest(model=model, limit=limit)
        return list((await self._read(self._stub.ListAuditEntries, request)).entries)
