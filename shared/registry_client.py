"""An async client of the registry's gRPC API, for services and the CLI.

Every call has a deadline. Reads are retried, a bounded number of times and
within the same deadline, when the registry is UNAVAILABLE; writes are never
retried (a write whose answer was lost may have committed). Status codes come
back as headwater's own errors: NOT_FOUND is :class:`ModelNotFound`,
INVALID_ARGUMENT :class:`InvalidInput`, ALREADY_EXISTS :class:`AlreadyExists`,
DATA_LOSS :class:`ArtifactIntegrityError`, UNAVAILABLE and DEADLINE_EXCEEDED
:class:`Unavailable`, and so on.

    async with RegistryClient("127.0.0.1:50051") as registry:
        await registry.create_model("churn", "binary", [("age", "int"), ("plan", "str")])
        version = await registry.create_version("churn", spec_json)
        await registry.deploy("churn", version.version)
        rollout = await registry.start_rollout("churn", 2, "canary", rollout_policy(interval_s=30))
        await registry.transition_rollout("churn", "pause", reason="holiday freeze")

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

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeAlias, TypeVar

import grpc

from headwater.shared import enums, errors
from headwater.shared.grpc_errors import error_for
from headwater.shared.pb import registry_pb2, registry_pb2_grpc
from headwater.shared.registry_gates_client import PromotionGateCalls
from headwater.shared.retry import Backoff

ACTOR_METADATA_KEY = "x-headwater-actor"
DEFAULT_MAX_MESSAGE_BYTES = 80 * 1024 * 1024
READ_ATTEMPTS = 4
#: Between two attempts at a read; uncapped: the deadline bounds it.
READ_BACKOFF = Backoff(initial_s=0.1, jitter=0.5)

R = TypeVar("R")

_TASKS = {name: value for value, name in enums.TASKS.items()}
_FEATURE_TYPES = {name: value for value, name in enums.FEATURE_TYPES.items()}
_ROLES = {name: value for value, name in enums.ROLES.items()}
_MODES = {name: value for value, name in enums.MODES.items()}
_SOURCES = {name: value for value, name in enums.SOURCES.items()}
_STRATEGIES = {name: value for value, name in enums.STRATEGIES.items()}
_ACTIONS = {name: value for value, name in enums.ROLLOUT_ACTIONS.items()}

FeatureArg: TypeAlias = registry_pb2.Feature | tuple[str, str] | tuple[str, str, bool]
RouteArg: TypeAlias = registry_pb2.Route | tuple[int, float, str]


def _enum(kind: str, value: str | int, names: Mapping[str, Any]) -> Any:
    if isinstance(value, int):
        return value
    try:
        return names[value]
    except KeyError:
        raise errors.InvalidInput(f"unknown {kind} {value!r}: one of {', '.join(names)}") from None


def feature(name: str, type: str | int, required: bool = True) -> registry_pb2.Feature:
    """A Feature message; ``type`` is float, int, str or bool (or the enum value)."""
    return registry_pb2.Feature(
        name=name, type=_enum("feature type", type, _FEATURE_TYPES), required=required
    )


def route(version: int, weight: float = 1.0, role: str | int = "primary") -> registry_pb2.Route:
    """A Route message; ``role`` is primary, canary, shadow or challenger (or the enum value)."""
    return registry_pb2.Route(
        version=version, weight=weight, role=_enum("route role", role, _ROLES)
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
        source=_enum("version source", source, _SOURCES),
        offsets=list(offsets),
        example_count=example_count,
        metrics=dict(metrics or {}),
        seed=seed,
    )


def rollout_policy(
    step_percents: Iterable[float] = (),
    *,
    interval_s: float | None = None,
    min_samples: int | None = None,
    max_drop: float | None = None,
    alpha: float | None = None,
    shadow_percent: float | None = None,
    bandit_floor_weight: float | None = None,
    max_latency_ratio: float | None = None,
) -> registry_pb2.RolloutPolicy:
    """A RolloutPolicy message; what is left out (None, no steps) takes the registry's default."""
    given = {
        "interval_s": interval_s, "min_samples": min_samples, "max_drop": max_drop,
        "alpha": alpha, "shadow_percent": shadow_percent,
        "bandit_floor_weight": bandit_floor_weight, "max_latency_ratio": max_latency_ratio,
    }  # fmt: skip
    return registry_pb2.RolloutPolicy(
        step_percents=list(step_percents),
        **{name: value for name, value in given.items() if value is not None},
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


class RegistryClient(PromotionGateCalls):
    """Async client of ``headwater.registry.v1.Registry``.

    The promotion gate calls (gates, evaluations) come from
    :class:`~headwater.shared.registry_gates_client.PromotionGateCalls`.

    Args:
        target: ``host:port`` of the registry.
        deadline_s: Deadline of every call, retries included.
        actor: Who the caller is, recorded in the audit log (metadata
            ``x-headwater-actor``); empty leaves it to the server (``anonymous``).
        max_message_bytes: Largest message sent or received (artifacts are big).

    Use as an async context manager, or call :meth:`close` when done.

    """

    def __init__(
        self,
        target: str,
        deadline_s: float = 5.0,
        *,
        actor: str = "",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.target = target
        self.deadline_s = deadline_s
        self._metadata = ((ACTOR_METADATA_KEY, actor),) if actor else ()
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stub = registry_pb2_grpc.RegistryStub(self._channel)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    # --- calls --------------------------------------------------------------------

    async def _write(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        try:
            return await method(request, timeout=self.deadline_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise error_for(error.code(), error.details() or "") from error

    async def _read(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        deadline = time.monotonic() + self.deadline_s
        for attempt in range(READ_ATTEMPTS):
            remaining = deadline - time.monotonic()
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                backoff = READ_BACKOFF.delay_s(attempt)
                last = attempt == READ_ATTEMPTS - 1
                if (
                    error.code() is not grpc.StatusCode.UNAVAILABLE
                    or last
                    or (deadline - time.monotonic() <= backoff)
                ):
                    raise error_for(error.code(), error.details() or "") from error
                await asyncio.sleep(backoff)
        raise AssertionError("unreachable")

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
            task=_enum("task", task, _TASKS),
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
            mode=_enum("serving mode", mode, _MODES),
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

    # --- rollouts -----------------------------------------------------------------

    async def start_rollout(
        self,
        model: str,
        candidate_version: int,
        strategy: str | int = "canary",
        policy: registry_pb2.RolloutPolicy | None = None,
        *,
        reason: str = "",
    ) -> registry_pb2.Rollout:
        """Start rolling a version out over the deployed primary.

        ``strategy`` is blue-green, canary, rolling, shadow or bandit (or the
        enum value); ``policy`` from :func:`rollout_policy` (None: the defaults).
        """
        request = registry_pb2.StartRolloutRequest(
            model=model,
            candidate_version=candidate_version,
            strategy=_enum("rollout strategy", strategy, _STRATEGIES),
            policy=policy,
            reason=reason,
        )
        return await self._write(self._stub.StartRollout, request)

    async def get_rollout(self, model: str) -> registry_pb2.Rollout:
        """The model's active rollout, else its latest (ModelNotFound when it never had one)."""
        request = registry_pb2.GetRolloutRequest(model=model)
        return await self._read(self._stub.GetRollout, request)

    async def list_rollouts(self, model: str, limit: int = 20) -> list[registry_pb2.RolloutHistory]:
        """The model's rollouts, newest first, each with its transitions (oldest first)."""
        request = registry_pb2.ListRolloutsRequest(model=model, limit=limit)
        return list((await self._read(self._stub.ListRollouts, request)).rollouts)

    async def transition_rollout(
        self,
        model: str,
        action: str | int,
        *,
        reason: str = "",
        evidence: Mapping[str, float] | None = None,
        expected_revision: int = 0,
        rollout_id: str = "",
    ) -> registry_pb2.Rollout:
        """Move the model's active rollout: pause, resume, advance, promote, rollback or abort.

        A controller passes the ``expected_revision`` (and ``rollout_id``) it decided
        on: when the rollout moved meanwhile, the call fails with FailedPrecondition
        and changes nothing. Never retried (a write).
        """
        request = registry_pb2.TransitionRolloutRequest(
            model=model,
            action=_enum("rollout action", action, _ACTIONS),
            reason=reason,
            evidence=dict(evidence or {}),
            expected_revision=expected_revision,
            rollout_id=rollout_id,
        )
        return await self._write(self._stub.TransitionRollout, request)

    # --- audit --------------------------------------------------------------------

    async def list_audit_entries(
        self, model: str = "", limit: int = 100
    ) -> list[registry_pb2.AuditEntry]:
        """The newest audit entries, newest first (of one model, or all when empty)."""
        request = registry_pb2.ListAuditEntriesRequest(model=model, limit=limit)
        return list((await self._read(self._stub.ListAuditEntries, request)).entries)
