"""Helpers for the gateway's several-versions tests: a model with versions, routes, requests."""

from __future__ import annotations

import grpc

from headwater.services.gateway.server import GatewayServer
from headwater.shared.pb import oip_pb2, oip_pb2_grpc, registry_pb2
from headwater.shared.registry_client import RegistryClient
from tests.fixtures import eventually
from tests.integration.gateway.conftest import (
    FEATURES,
    MODEL,
    create_version,
    infer_request,
    trained,
)

R = registry_pb2
PRIMARY, CANARY, SHADOW, CHALLENGER = (
    R.ROUTE_ROLE_PRIMARY,
    R.ROUTE_ROLE_CANARY,
    R.ROUTE_ROLE_SHADOW,
    R.ROUTE_ROLE_CHALLENGER,
)
ROW = {"x1": 1.0, "x2": 1.0}


async def model_with_versions(client: RegistryClient, count: int) -> None:
    """MODEL with versions 1..count (odd ones answer True, even ones False), v1 deployed."""
    await client.create_model(MODEL, "binary", FEATURES)
    for version in range(1, count + 1):
        await create_version(client, estimator=trained(version % 2 == 1))
    await client.deploy(MODEL, 1)


async def route(
    client: RegistryClient, gateway: GatewayServer, *routes: tuple[int, float, int]
) -> registry_pb2.Deployment:
    """Set MODEL's routes and wait until ``gateway`` serves that revision."""
    deployment = await client.set_deployment(MODEL, routes)

    async def applied() -> bool:
        return gateway.cache.revision(MODEL) >= deployment.revision

    await eventually(applied, timeout_s=15, what=f"revision {deployment.revision} served")
    return deployment


def keyed_request(key: str, rows: int = 1, **fields) -> oip_pb2.ModelInferRequest:
    """A request routed by ``key`` (the ``routing_key`` parameter)."""
    request = infer_request([ROW] * rows, **fields)
    request.parameters["routing_key"].string_param = key
    return request


def prediction_ids(response: oip_pb2.ModelInferResponse) -> list[str]:
    return response.parameters["prediction_ids"].string_param.split(",")


async def answered_by(
    stub: oip_pb2_grpc.GRPCInferenceServiceStub, keys: list[str]
) -> dict[str, int]:
    """The version that answers each key."""
    answers = {}
    for key in keys:
        response = await stub.ModelInfer(keyed_request(key), timeout=5)
        answers[key] = response.parameters["headwater_version"].int64_param
    return answers


async def ready(stub: oip_pb2_grpc.GRPCInferenceServiceStub, version: int) -> bool:
    """OIP ModelReady of one version of MODEL."""
    request = oip_pb2.ModelReadyRequest(name=MODEL, version=str(version))
    try:
        return (await stub.ModelReady(request, timeout=5)).ready
    except grpc.aio.AioRpcError:
        return False
