"""A registry and a gateway per test, on a fresh database and fresh topics."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from river import compose, linear_model

from headwater.services.gateway.server import GatewayServer
from headwater.services.gateway.settings import GatewaySettings
from headwater.services.registry.server import RegistryServer
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.pb import events_pb2, oip_pb2, oip_pb2_grpc, registry_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import ArtifactSettings, KafkaSettings, RegistryClientSettings
from tests.fixtures import eventually, unique_name
from tests.signed_updates import signed_update

SPEC = '{"component": "linear_model.LogisticRegression"}'
FEATURES = [("x1", "float"), ("x2", "float"), ("plan", "str", False)]
MODEL = "churn"
CODEC = ArtifactCodec.from_settings(ArtifactSettings())
#: The row every test model answers ``positive`` for (see :func:`trained`).
ROW = {"x1": 1.0, "x2": 1.0}


def gateway_settings(registry_target: str, kafka: KafkaSettings, **overrides) -> GatewaySettings:
    values = {
        "port": 0,
        "metrics_port": 0,
        "registry": RegistryClientSettings(target=registry_target),
        "gateway_id": unique_name("gw"),
        "max_batch_rows": 8,
        "startup_timeout_s": 30,
        "live_catchup_timeout_s": 5,
        "kafka": kafka,
        **overrides,
    }
    return GatewaySettings(**values)


def trained(positive: bool, n: int = 200) -> compose.Pipeline:
    """A model that answers ``positive`` for x1=1, x2=1 with high confidence."""
    model = compose.Discard("plan") | linear_model.LogisticRegression()
    for _ in range(n):
        model.learn_one(ROW, positive)
    return model


def model_update(
    sequence: int, positive: bool, codec: ArtifactCodec = CODEC
) -> events_pb2.ModelUpdate:
    """A signed update of MODEL version 1 whose state (:func:`trained`) answers ``positive``."""
    return signed_update(codec, trained(positive), MODEL, 1, sequence)


async def create_version(
    client: RegistryClient, model: str = MODEL, estimator=None
) -> registry_pb2.ModelVersion:
    """A new version built by the registry from SPEC, or carrying ``estimator``'s artifact."""
    if estimator is None:
        return await client.create_version(model, SPEC)
    artifact = CODEC.encode(estimator)
    return await client.create_version(
        model, SPEC, artifact=artifact.content, artifact_signature=artifact.signature
    )


@pytest.fixture
async def deployed(client: RegistryClient) -> registry_pb2.Model:
    """MODEL with version 1 (trained to answer True) deployed live."""
    await client.create_model(MODEL, "binary", FEATURES)
    await create_version(client, estimator=trained(True))
    await client.deploy(MODEL, 1)
    return await client.get_model(MODEL)


GatewayFactory = Callable[..., Awaitable[GatewayServer]]


@asynccontextmanager
async def started_gateways(kafka: KafkaSettings) -> AsyncIterator[GatewayFactory]:
    """``await start(registry_target, **overrides)`` starts a gateway; all stopped on exit.

    ``kafka=`` replaces ``kafka``; other keywords override :func:`gateway_settings`.
    """
    started: list[GatewayServer] = []

    async def start(registry_target: str, **overrides) -> GatewayServer:
        settings = gateway_settings(registry_target, overrides.pop("kafka", kafka), **overrides)
        server = GatewayServer(settings)
        started.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            await server.stop(grace_s=2)


@pytest.fixture
async def start_gateway(
    registry: RegistryServer, kafka_settings: KafkaSettings
) -> AsyncIterator[GatewayFactory]:
    """Start gateways against the test registry; all stopped after the test."""
    async with started_gateways(kafka_settings) as start:
        yield functools.partial(start, registry.target)


@pytest.fixture
async def gateway(deployed: registry_pb2.Model, start_gateway: GatewayFactory) -> GatewayServer:
    """A started gateway serving MODEL version 1."""
    server = await start_gateway()
    assert server.ready.is_set()
    return server


@pytest.fixture
async def stub(gateway: GatewayServer) -> AsyncIterator[oip_pb2_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        yield oip_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_request(rows: list[dict], model: str = MODEL, **fields) -> oip_pb2.ModelInferRequest:
    """One typed tensor per feature present in the rows."""
    request = oip_pb2.ModelInferRequest(model_name=model, **fields)
    for name, datatype, field in (
        ("x1", "FP64", "fp64_contents"),
        ("x2", "FP64", "fp64_contents"),
        ("plan", "BYTES", "bytes_contents"),
    ):
        if name in rows[0]:
            tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
            values = [r[name].encode() if datatype == "BYTES" else r[name] for r in rows]
            getattr(tensor.contents, field).extend(values)
    return request


def prediction_ids(response: oip_pb2.ModelInferResponse) -> list[str]:
    """The ids of the prediction events a response's rows were published as, in row order."""
    return response.parameters["prediction_ids"].string_param.split(",")


async def answer_when(
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    accept: Callable[[oip_pb2.ModelInferResponse], bool],
    what: str,
    timeout_s: float = 15.0,
) -> oip_pb2.ModelInferResponse:
    """Ask for :data:`ROW` until an answer passes ``accept`` (a swap arrived); that answer.

    Fails the test when none does within ``timeout_s``.
    """

    async def accepted() -> oip_pb2.ModelInferResponse | None:
        response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
        return response if accept(response) else None

    return await eventually(accepted, timeout_s=timeout_s, what=what)
