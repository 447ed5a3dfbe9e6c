"""The OIP v2 ``inference.GRPCInferenceService`` servicer: a few lines per RPC."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata as package_metadata

import grpc
from opentelemetry import propagate

from headwater.services.gateway.metadata import model_metadata
from headwater.services.gateway.service import InferenceService
from headwater.shared.errors import InvalidInput, ModelNotFound
from headwater.shared.grpc_errors import grpc_errors
from headwater.shared.pb import oip_pb2, oip_pb2_grpc

SERVER_NAME = "headwater-gateway"
SERVICE_NAME = oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def _version() -> str:
    try:
        return package_metadata.version("headwater")
    except package_metadata.PackageNotFoundError:
        return "0"


class InferenceServicer(oip_pb2_grpc.GRPCInferenceServiceServicer):
    """Adapts gRPC calls to :class:`InferenceService`.

    Args:
        service: The inference use case.
        is_ready: Whether the deployed models are loaded (ServerReady).

    """

    def __init__(self, service: InferenceService, is_ready: Callable[[], bool]) -> None:
        self.service = service
        self.is_ready = is_ready
        self.version = _version()

    @grpc_errors
    async def ServerLive(
        self, request: oip_pb2.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ServerLiveResponse:
        """The process answers."""
        return oip_pb2.ServerLiveResponse(live=True)

    @grpc_errors
    async def ServerReady(
        self, request: oip_pb2.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ServerReadyResponse:
        """Every deployed model is loaded."""
        return oip_pb2.ServerReadyResponse(ready=self.is_ready())

    @grpc_errors
    async def ModelReady(
        self, request: oip_pb2.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ModelReadyResponse:
        """The model (and the version, when given) is deployed and loaded."""
        cache = self.service.cache
        entry = cache.find(request.name)
        if entry is None and not cache.is_known(request.name):
            raise ModelNotFound(f"model '{request.name}' not found")
        ready = entry is not None and bool(entry.routes.live)
        if ready and request.version:
            ready = _version_number(request.version) in (entry.versions if entry else {})
        return oip_pb2.ModelReadyResponse(ready=ready)

    @grpc_errors
    async def ServerMetadata(
        self, request: oip_pb2.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ServerMetadataResponse:
        """Name and version of this server."""
        return oip_pb2.ServerMetadataResponse(name=SERVER_NAME, version=self.version)

    @grpc_errors
    async def ModelMetadata(
        self, request: oip_pb2.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ModelMetadataResponse:
        """Inputs (one per feature), outputs and deployed versions of a model."""
        return model_metadata(self.service.cache.get(request.name))

    @grpc_errors
    async def ModelInfer(
        self, request: oip_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ModelInferResponse:
        """Predict; the caller's W3C trace context (metadata) parents the request span."""
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        return await self.service.infer(request, propagate.extract(carrier))


def _version_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidInput(f"version must be a version number, got {text!r}") from None
