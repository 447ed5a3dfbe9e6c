"""The ``headwater.registry.v1.Registry`` gRPC servicer: a few lines per RPC.

Each method converts the request, calls :class:`.service.RegistryService`
(or, for rollouts, :class:`.rollout_service.RolloutService`, for gateway
replicas :class:`.replica_service.ReplicaService`, for promotion gates
:class:`.gate_service.GateService`) and wraps the result;
``@grpc_errors`` turns headwater errors into status codes. The caller names
itself in the ``x-headwater-actor`` metadata key, recorded in the audit log,
on every registry event and on every rollout transition.
"""

from __future__ import annotations

from typing import TypeAlias

import grpc

from headwater.services.registry import convert, gate_convert, replica_convert
from headwater.services.registry.gate_service import GateService
from headwater.services.registry.replica_service import ReplicaService
from headwater.services.registry.rollout_service import RolloutService
from headwater.services.registry.service import RegistryService
from headwater.shared.errors import InvalidInput
from headwater.shared.grpc_errors import grpc_errors
from headwater.shared.pb import registry_pb2, registry_pb2_grpc

ACTOR_METADATA_KEY = "x-headwater-actor"
ANONYMOUS = "anonymous"
MAX_ACTOR_CHARS = 128

Context: TypeAlias = grpc.aio.ServicerContext


def actor_of(context: Context) -> str:
    """The caller's name from the request metadata (``anonymous`` when absent)."""
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_METADATA_KEY and isinstance(value, str) and value:
            if len(value) > MAX_ACTOR_CHARS:
                raise InvalidInput(f"{ACTOR_METADATA_KEY} is longer than {MAX_ACTOR_CHARS}")
            return value
    return ANONYMOUS


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    """Adapts gRPC requests to the registry's services."""

    def __init__(
        self,
        service: RegistryService,
        rollouts: RolloutService,
        replicas: ReplicaService,
        gates: GateService,
    ) -> None:
        self._service = service
        self._rollouts = rollouts
        self._replicas = replicas
        self._gates = gates

    @grpc_errors
    async def CreateModel(  # noqa: D102
        self, request: registry_pb2.CreateModelRequest, context: Context
    ) -> registry_pb2.Model:
        return await self._service.create_model(convert.new_model(request), actor_of(context))

    @grpc_errors
    async def GetModel(  # noqa: D102
        self, request: registry_pb2.GetModelRequest, context: Context
    ) -> registry_pb2.Model:
        return await self._service.get_model(request.name)

    @grpc_errors
    async def ListModels(  # noqa: D102
        self, request: registry_pb2.ListModelsRequest, context: Context
    ) -> registry_pb2.ListModelsResponse:
        return registry_pb2.ListModelsResponse(models=await self._service.list_models())

    @grpc_errors
    async def CreateVersion(  # noqa: D102
        self, request: registry_pb2.CreateVersionRequest, context: Context
    ) -> registry_pb2.ModelVersion:
        draft = convert.new_version(request)
        return await self._service.create_version(draft, actor_of(context))

    @grpc_errors
    async def GetVersion(  # noqa: D102
        self, request: registry_pb2.GetVersionRequest, context: Context
    ) -> registry_pb2.ModelVersion:
        return await self._service.get_version(*convert.version_ref(request.ref))

    @grpc_errors
    async def ListVersions(  # noqa: D102
        self, request: registry_pb2.ListVersionsRequest, context: Context
    ) -> registry_pb2.ListVersionsResponse:
        versions = await self._service.list_versions(request.model)
        return registry_pb2.ListVersionsResponse(versions=versions)

    @grpc_errors
    async def GetArtifact(  # noqa: D102
        self, request: registry_pb2.GetArtifactRequest, context: Context
    ) -> registry_pb2.GetArtifactResponse:
        version, content = await self._service.get_artifact(*convert.version_ref(request.ref))
        return registry_pb2.GetArtifactResponse(version=version, content=content)

    @grpc_errors
    async def SetAlias(  # noqa: D102
        self, request: registry_pb2.SetAliasRequest, context: Context
    ) -> registry_pb2.Model:
        return await self._service.set_alias(
            request.model, request.alias, request.version, actor_of(context)
        )

    @grpc_errors
    async def DeleteAlias(  # noqa: D102
        self, request: registry_pb2.DeleteAliasRequest, context: Context
    ) -> registry_pb2.Model:
        return await self._service.delete_alias(request.model, request.alias, actor_of(context))

    @grpc_errors
    async def SetDeployment(  # noqa: D102
        self, request: registry_pb2.SetDeploymentRequest, context: Context
    ) -> registry_pb2.Deployment:
        draft = convert.new_deployment(request)
        return await self._service.set_deployment(draft, actor_of(context))

    @grpc_errors
    async def GetDeployment(  # noqa: D102
        self, request: registry_pb2.GetDeploymentRequest, context: Context
    ) -> registry_pb2.Deployment:
        return await self._service.get_deployment(request.model)

    @grpc_errors
    async def ListDeployments(  # noqa: D102
        self, request: registry_pb2.ListDeploymentsRequest, context: Context
    ) -> registry_pb2.ListDeploymentsResponse:
        deployments = await self._service.list_deployments()
        return registry_pb2.ListDeploymentsResponse(deployments=deployments)

    @grpc_errors
    async def ListAuditEntries(  # noqa: D102
        self, request: registry_pb2.ListAuditEntriesRequest, context: Context
    ) -> registry_pb2.ListAuditEntriesResponse:
        entries = await self._service.list_audit(request.model, request.limit)
        return registry_pb2.ListAuditEntriesResponse(entries=entries)

    @grpc_errors
    async def StartRollout(  # noqa: D102
        self, request: registry_pb2.StartRolloutRequest, context: Context
    ) -> registry_pb2.Rollout:
        draft = convert.new_rollout(request)
        return await self._rollouts.start_rollout(draft, actor_of(context))

    @grpc_errors
    async def GetRollout(  # noqa: D102
        self, request: registry_pb2.GetRolloutRequest, context: Context
    ) -> registry_pb2.Rollout:
        return await self._rollouts.get_rollout(request.model)

    @grpc_errors
    async def ListRollouts(  # noqa: D102
        self, request: registry_pb2.ListRolloutsRequest, context: Context
    ) -> registry_pb2.ListRolloutsResponse:
        rollouts = await self._rollouts.list_rollouts(request.model, request.limit)
        return registry_pb2.ListRolloutsResponse(rollouts=rollouts)

    @grpc_errors
    async def TransitionRollout(  # noqa: D102
        self, request: registry_pb2.TransitionRolloutRequest, context: Context
    ) -> registry_pb2.Rollout:
        change = convert.rollout_change(request)
        return await self._rollouts.transition_rollout(change, actor_of(context))

    @grpc_errors
    async def Heartbeat(  # noqa: D102
        self, request: registry_pb2.HeartbeatRequest, context: Context
    ) -> registry_pb2.HeartbeatResponse:
        return await self._replicas.heartbeat(replica_convert.heartbeat_of(request))

    @grpc_errors
    async def ListReplicas(  # noqa: D102
        self, request: registry_pb2.ListReplicasRequest, context: Context
    ) -> registry_pb2.ListReplicasResponse:
        replicas = await self._replicas.list_replicas(request.model)
        return registry_pb2.ListReplicasResponse(replicas=replicas)

    @grpc_errors
    async def RecordEvaluation(  # noqa: D102
        self, request: registry_pb2.RecordEvaluationRequest, context: Context
    ) -> registry_pb2.Evaluation:
        return await self._gates.record_evaluation(gate_convert.new_evaluation(request))

    @grpc_errors
    async def ListEvaluations(  # noqa: D102
        self, request: registry_pb2.ListEvaluationsRequest, context: Context
    ) -> registry_pb2.ListEvaluationsResponse:
        evaluations = await self._gates.list_evaluations(request.model, request.version)
        return registry_pb2.ListEvaluationsResponse(evaluations=evaluations)

    @grpc_errors
    async def SetPromotionGates(  # noqa: D102
        self, request: registry_pb2.SetPromotionGatesRequest, context: Context
    ) -> registry_pb2.PromotionGates:
        wanted = gate_convert.gates_of_message(request.gates)
        return await self._gates.set_gates(request.model, wanted, actor_of(context))

    @grpc_errors
    async def GetPromotionGates(  # noqa: D102
        self, request: registry_pb2.GetPromotionGatesRequest, context: Context
    ) -> registry_pb2.PromotionGates:
        return await self._gates.get_gates(request.model)
