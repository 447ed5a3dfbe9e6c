"""The gateway serving requests over gRPC: inference, events, errors, health, stop."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from headwater.services.gateway.server import GatewayServer, model_health_name
from headwater.shared.bus.topics import Topic
from headwater.shared.features import features_from_proto
from headwater.shared.pb import events_pb2, oip_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings, RegistryClientSettings
from tests.fixtures import eventually, free_port, read_records
from tests.integration.gateway.conftest import (
    MODEL,
    ROW,
    infer_request,
    prediction_ids,
)

pytestmark = pytest.mark.integration


def positive_proba(response: oip_pb2.ModelInferResponse) -> float:
    classes = response.outputs[1].parameters["classes"].string_param
    assert classes == "[false, true]"
    return response.outputs[1].contents.fp64_contents[1]


async def test_serves_deployed_version_and_publishes_one_event_per_row(
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    gateway: GatewayServer,
    kafka_settings: KafkaSettings,
) -> None:
    rows = [ROW, {"x1": 0.5, "x2": -1.0, "plan": "pro"}, ROW]
    rows[0] = {**ROW, "plan": "basic"}
    rows[2] = {**ROW, "plan": "free"}
    response = await stub.ModelInfer(infer_request(rows, id="r-1"), timeout=5)
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "r-1")
    assert response.parameters["headwater_version"].int64_param == 1
    assert response.parameters["live_sequence"].int64_param == 0
    predict, proba = response.outputs
    assert (predict.name, predict.datatype, list(predict.shape)) == ("predict", "BOOL", [3])
    assert predict.contents.bool_contents[0] is True
    assert (proba.datatype, list(proba.shape)) == ("FP64", [3, 2])
    ids = prediction_ids(response)
    assert len(set(ids)) == 3

    records = await read_records(kafka_settings, Topic.PREDICTIONS, 3)
    assert len(records) == 3
    events = {r.key.decode(): events_pb2.PredictionEvent.FromString(r.value) for r in records}
    assert set(events) == set(ids)
    for prediction_id, row in zip(ids, rows, strict=True):
        event = events[prediction_id]
        assert features_from_proto(event.features) == row
        assert (event.model, event.version, event.request_id) == (MODEL, 1, "r-1")
        assert event.gateway_id == gateway.settings.gateway_id
    assert events[ids[0]].prediction.bool_label is True
    ok = {"model": MODEL, "version": "1", "code": "OK"}
    assert REGISTRY.get_sample_value("headwater_gateway_requests_total", ok) >= 1


async def test_raw_request_like_tritonclient_gets_raw_answer(
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = oip_pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x1", datatype="FP32", shape=[2, 1])
    request.inputs.add(name="x2", datatype="FP32", shape=[2, 1])
    request.raw_input_contents.extend(
        [np.array([1, 1], "<f4").tobytes(), np.array([1, 1], "<f4").tobytes()]
    )
    response = await stub.ModelInfer(request, timeout=5)
    assert np.frombuffer(response.raw_output_contents[0], "?").tolist() == [True, True]
    matrix = np.frombuffer(response.raw_output_contents[1], "<f8").reshape(2, 2)
    assert (matrix[:, 1] > 0.5).all()


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (
            infer_request([ROW], model="nope"),
            grpc.StatusCode.NOT_FOUND,
            "model 'nope' not found",
        ),
        (
            infer_request([{"x1": 1.0}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing required feature(s): x2",
        ),
        (
            infer_request([{"x1": float("nan"), "x2": 1.0}]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x1': value at row 0 is nan; NaN and infinity are not accepted",
        ),
        (
            infer_request([ROW] * 9),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x1': batch of 9 rows is over the limit of 8",
        ),
        (
            oip_pb2.ModelInferRequest(
                model_name=MODEL,
                inputs=[
                    oip_pb2.ModelInferRequest.InferInputTensor(
                        name="x1", datatype="BYTES", shape=[1]
                    )
                ],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'x1': wrong datatype BYTES for feature type float;",
        ),
        (
            oip_pb2.ModelInferRequest(
                model_name=MODEL,
                inputs=[
                    oip_pb2.ModelInferRequest.InferInputTensor(
                        name="input__0", datatype="FP64", shape=[1, 2]
                    )
                ],
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input__0': shape [1, 2] does not match [batch, 3]",
        ),
        (
            infer_request(
                [ROW], outputs=[oip_pb2.ModelInferRequest.InferRequestedOutputTensor(name="y")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown output 'y'; this model has: predict, predict_proba",
        ),
    ],
    ids=["unknown-model", "missing", "nan", "batch", "datatype", "shape", "output"],
)
async def test_bad_requests_get_a_status_naming_the_problem(
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    request_: oip_pb2.ModelInferRequest,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(request_, timeout=5)
    assert caught.value.code() is code
    assert message in caught.value.details()
    # and the gateway keeps serving
    response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
    assert response.model_version == "1"


async def test_an_undecodable_body_is_invalid_argument_without_parser_internals(
    gateway: GatewayServer, stub: oip_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        for method, message_type in (
            ("ModelInfer", "inference.ModelInferRequest"),
            ("ModelMetadata", "inference.ModelMetadataRequest"),
        ):
            raw_call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw_call(b"\x0a\xff\xff\xff\xff\x0f", timeout=5)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, method
            assert caught.value.details() == (
                f"the request body is not a valid {message_type} (it does not decode as protobuf)"
            )
    response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
    assert response.model_version == "1"


async def test_health_metadata_and_readiness(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    client: RegistryClient,
) -> None:
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", model_health_name(MODEL)):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
    assert (await stub.ServerLive(oip_pb2.ServerLiveRequest(), timeout=5)).live
    assert (await stub.ServerReady(oip_pb2.ServerReadyRequest(), timeout=5)).ready
    assert (await stub.ModelReady(oip_pb2.ModelReadyRequest(name=MODEL), timeout=5)).ready
    ready_v2 = oip_pb2.ModelReadyRequest(name=MODEL, version="2")
    assert not (await stub.ModelReady(ready_v2, timeout=5)).ready
    metadata = await stub.ModelMetadata(oip_pb2.ModelMetadataRequest(name=MODEL), timeout=5)
    assert [(t.name, t.datatype) for t in metadata.inputs] == [
        ("x1", "FP64"),
        ("x2", "FP64"),
        ("plan", "BYTES"),
    ]
    assert [t.name for t in metadata.outputs] == ["predict", "predict_proba"]
    assert list(metadata.versions) == ["1"]
    server = await stub.ServerMetadata(oip_pb2.ServerMetadataRequest(), timeout=5)
    assert server.name == "headwater-gateway"

    # a model created after start is known (UNAVAILABLE, not NOT_FOUND) once its event arrives
    await client.create_model("later", "regression", [("x1", "float")])

    async def known() -> bool:
        return gateway.cache.is_known("later")

    await eventually(known, what="MODEL_CREATED applied")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(infer_request([ROW], model="later"), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "model 'later' is not deployed" in caught.value.details()


async def test_stop_flushes_buffered_prediction_events(
    deployed, start_gateway, kafka_settings: KafkaSettings
) -> None:
    gateway = await start_gateway()
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = await stub.ModelInfer(infer_request([ROW] * 5), timeout=5)
    await gateway.stop(grace_s=5)
    assert gateway.producer.failed == 0
    records = await read_records(kafka_settings, Topic.PREDICTIONS, 5)
    assert {r.key.decode() for r in records} == set(prediction_ids(response))


async def test_keeps_serving_while_the_registry_is_down(
    registry, gateway: GatewayServer, stub: oip_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    await registry.stop(grace_s=1)
    response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
    assert response.model_version == "1"
    assert (await stub.ServerReady(oip_pb2.ServerReadyRequest(), timeout=5)).ready


async def test_not_serving_until_the_registry_answers(start_gateway) -> None:
    nobody = RegistryClientSettings(target=f"127.0.0.1:{free_port()}", deadline_s=0.5)
    gateway = await start_gateway(registry=nobody, startup_timeout_s=1)
    assert not gateway.ready.is_set()
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert (await stub.ServerLive(oip_pb2.ServerLiveRequest(), timeout=5)).live
        assert not (await stub.ServerReady(oip_pb2.ServerReadyRequest(), timeout=5)).ready


async def test_stop_with_the_broker_paused_ends_within_the_grace_and_counts_every_event(
    broker, deployed, start_gateway, kafka_settings: KafkaSettings
) -> None:
    gateway = await start_gateway()
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(infer_request([ROW]), timeout=5)
        await gateway.producer.flush(timeout_s=10)
        broker.pause()
        try:
            for _ in range(4):
                await stub.ModelInfer(infer_request([ROW] * 5), timeout=5)
            # a health Watch stream stays in flight: gRPC's stop waits out the whole grace
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            loop = asyncio.get_running_loop()
            started = loop.time()
            await gateway.stop(grace_s=1.0)
            took = loop.time() - started
        finally:
            broker.resume()
    assert took < 1.0 + 1.0 + 0.3, took  # grace + STOP_MARGIN_S + scheduling slack
    producer = gateway.producer
    assert producer.published + producer.failed == 1 + 20
    assert producer.buffered == 0
