"""The OIP v2 ``inference.GRPCInferenceService`` servicer: a few lines per RPC.

:func:`add_to_server` registers it with request deserializers that do not
raise: a body that is not a valid protobuf message of the RPC's request type is
answered ``INVALID_ARGUMENT`` with a plain message, instead of grpc.aio's
default (``UNKNOWN`` with the parser's exception text).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata as package_metadata
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate

from headwater.services.gateway.metadata import model_metadata
from headwater.services.gateway.service import InferenceService
from headwater.services.gateway.tensors import parse_version
from headwater.shared.errors import InvalidInput
from headwater.shared.grpc_errors import abort_with, grpc_errors
from headwater.shared.pb import oip_pb2, oip_pb2_grpc

SERVER_NAME = "headwater-gateway"
_SERVICE = oip_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME = _SERVICE.full_name
Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


@dataclass(frozen=True)
class Undecodable:
    """Stands for a request body that is not a valid message of the expected type."""

    message_type: str


def lenient_deserializer(message_class: type[Message]) -> Callable[[bytes], Any]:
    r"""A request deserializer that returns :class:`Undecodable` instead of raising.

    >>> decode = lenient_deserializer(oip_pb2.ModelInferRequest)
    >>> decode(b"\xff\xff\xff\xff")
    Undecodable(message_type='inference.ModelInferRequest')
    >>> decode(oip_pb2.ModelInferRequest(model_name="m").SerializeToString()).model_name
    'm'
    """
    full_name = message_class.DESCRIPTOR.full_name

    def deserialize(body: bytes) -> Any:
        try:
            return message_class.FromString(body)
        except DecodeError:
            return Undecodable(full_name)

    return deserialize


def _refusing_undecodable(behavior: Behavior) -> Behavior:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await abort_with(
                context,
                InvalidInput(
                    f"the request body is not a valid {request.message_type} "
                    "(it does not decode as protobuf)"
                ),
            )
        return await behavior(request, context)

    return handle


def add_to_server(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` (like the generated ``add_..._to_server``, lenient decoding)."""
    handlers = {}
    for method in _SERVICE.methods:
        request_class = getattr(oip_pb2, method.input_type.name)
        response_class = getattr(oip_pb2, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _refusing_undecodable(getattr(servicer, method.name)),
            request_deserializer=lenient_deserializer(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


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
        cache, version = self.service.cache, None
        if request.version and cache.find(request.name) is not None:  # else NOT_FOUND or False
            version = parse_version(request.version, "version")
        return oip_pb2.ModelReadyResponse(ready=cache.ready(request.name, version))

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
