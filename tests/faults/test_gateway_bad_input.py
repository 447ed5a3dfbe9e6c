"""The gateway under a burst of bad requests: each refused precisely, good ones unharmed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from headwater.services.gateway.metrics import UNKNOWN_MODEL
from headwater.services.gateway.server import GatewayServer, model_health_name
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import oip_pb2, oip_pb2_grpc
from headwater.shared.settings import KafkaSettings
from tests.faults.support import SERVING, read_to_end
from tests.integration.gateway.conftest import (
    MODEL,
    ROW,
    GatewayFactory,
    infer_request,
    prediction_ids,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MAX_MESSAGE_BYTES = 64 * 1024
INVALID = grpc.StatusCode.INVALID_ARGUMENT
Tensor = oip_pb2.ModelInferRequest.InferInputTensor


@dataclass(frozen=True)
class Bad:
    """A bad request, the status and message it must get, and whether the service counts it."""

    name: str
    request: oip_pb2.ModelInferRequest
    code: grpc.StatusCode
    message: str
    counted_as: str | None = MODEL  # model label of headwater_gateway_requests_total


def tensor(name: str, datatype: str, shape: list[int], **contents: list) -> Tensor:
    t = Tensor(name=name, datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(t.contents, field).extend(values)
    return t


def request(*inputs: Tensor, raw: list[bytes] | None = None, **fields) -> oip_pb2.ModelInferRequest:
    message = oip_pb2.ModelInferRequest(model_name=MODEL, inputs=list(inputs), **fields)
    message.raw_input_contents.extend(raw or [])
    return message


X2 = tensor("x2", "FP64", [1], fp64_contents=[1.0])
TOO_LARGE = infer_request([{**ROW, "plan": "x" * MAX_MESSAGE_BYTES}])


def bad_requests() -> list[Bad]:
    """Every kind of bad input, with the exact status and the message naming the problem."""
    return [
        Bad("unknown model", infer_request([ROW], model="nope"),
            grpc.StatusCode.NOT_FOUND, "model 'nope' not found", counted_as=UNKNOWN_MODEL),
        Bad("wrong datatype", request(tensor("x1", "BYTES", [1], bytes_contents=[b"1"]), X2),
            INVALID, "input 'x1': wrong datatype BYTES for feature type float; expected one of"),
        Bad("unsupported datatype", request(tensor("x1", "FP16", [1]), X2),
            INVALID, "input 'x1': unsupported datatype 'FP16'"),
        Bad("out of range", request(tensor("x1", "INT8", [1], int_contents=[1000]), X2),
            INVALID, "input 'x1': value 1000 at row 0 is out of range for INT8"),
        Bad("2-d feature", request(tensor("x1", "FP64", [1, 2], fp64_contents=[1, 2]), X2),
            INVALID, "input 'x1': shape [1, 2] must be [batch] or [batch, 1]"),
        Bad("negative dim", request(tensor("x1", "FP64", [-1]), X2),
            INVALID, "input 'x1': invalid shape [-1]"),
        Bad("empty batch", request(tensor("x1", "FP64", [0]), X2),
            INVALID, "input 'x1': the batch is empty; send at least one row"),
        Bad("ragged batch", request(tensor("x1", "FP64", [2], fp64_contents=[1, 2]), X2),
            INVALID, "input 'x2' has a batch of 1 rows, other inputs have 2"),
        Bad("short contents", request(tensor("x1", "FP64", [2], fp64_contents=[1.0]),
                                      tensor("x2", "FP64", [2], fp64_contents=[1, 2])),
            INVALID, "input 'x1': content length mismatch: contents.fp64_contents has 1"),
        Bad("dense columns", request(tensor("input__0", "FP64", [1, 2], fp64_contents=[1, 2])),
            INVALID, "input 'input__0': shape [1, 2] does not match [batch, 3]"),
        Bad("nan", infer_request([{"x1": float("nan"), "x2": 1.0}]),
            INVALID, "input 'x1': value at row 0 is nan; NaN and infinity are not accepted"),
        Bad("-inf", infer_request([{"x1": 1.0, "x2": float("-inf")}]),
            INVALID, "input 'x2': value at row 0 is -inf; NaN and infinity are not accepted"),
        Bad("inf dense", request(tensor("input__0", "FP64", [1, 3],
                                        fp64_contents=[1.0, float("inf"), 0.0])),
            INVALID, "input 'input__0': value at row 0, column 1 is inf"),
        Bad("oversized batch", infer_request([ROW] * 9),
            INVALID, "input 'x1': batch of 9 rows is over the limit of 8"),
        Bad("no inputs", request(), INVALID, "the request has no input tensors"),
        Bad("missing feature", infer_request([{"x1": 1.0}]),
            INVALID, "missing required feature(s): x2"),
        Bad("unknown tensor", request(tensor("x1", "FP64", [1], fp64_contents=[1]),
                                      tensor("zz", "FP64", [1], fp64_contents=[1])),
            INVALID, "unknown input tensor 'zz': send one tensor per feature (x1, x2, plan)"),
        Bad("duplicate tensor", request(tensor("x1", "FP64", [1], fp64_contents=[1]),
                                        tensor("x1", "FP64", [1], fp64_contents=[1])),
            INVALID, "input 'x1' is given more than once"),
        Bad("garbage raw bytes", request(tensor("x1", "FP32", [1]), tensor("x2", "FP32", [1]),
                                         raw=[b"\xde\xad\xbe", b"\x00\x00\x80\x3f"]),
            INVALID, "input 'x1': content length mismatch: raw_input_contents has 3 bytes, "
                     "shape and FP32 need 4"),
        Bad("raw count", request(tensor("x1", "FP32", [1]), tensor("x2", "FP32", [1]),
                                 raw=[b"\x00\x00\x80\x3f"]),
            INVALID, "raw_input_contents has 1 entries for 2 input tensors"),
        Bad("truncated raw BYTES", request(tensor("x1", "FP32", [1]), tensor("x2", "FP32", [1]),
                                           tensor("plan", "BYTES", [1]),
                                           raw=[b"\x00\x00\x80\x3f", b"\x00\x00\x80\x3f",
                                                b"\x10\x00\x00\x00ab"]),
            INVALID, "input 'plan': raw BYTES content is truncated"),
        Bad("invalid UTF-8", request(tensor("plan", "BYTES", [1], bytes_contents=[b"\xff\xfe"]),
                                     tensor("x1", "FP64", [1], fp64_contents=[1]), X2),
            INVALID, "input 'plan': value at row 0 is not valid UTF-8"),
        Bad("contents and raw", request(tensor("x1", "FP32", [1], fp32_contents=[1]),
                                        tensor("x2", "FP32", [1]),
                                        raw=[b"\x00\x00\x80\x3f", b"\x00\x00\x80\x3f"]),
            INVALID, "input 'x1': both contents and raw_input_contents are set"),
        Bad("version not a number", infer_request([ROW], model_version="abc"),
            INVALID, "model_version must be a version number, got 'abc'"),
        Bad("version not deployed", infer_request([ROW], model_version="9"),
            grpc.StatusCode.NOT_FOUND,
            "version 9 of model 'churn' is not deployed (deployed: 1)"),
        Bad("unknown output", infer_request(
                [ROW], outputs=[oip_pb2.ModelInferRequest.InferRequestedOutputTensor(name="y")]),
            INVALID, "unknown output 'y'; this model has: predict, predict_proba"),
        Bad("message too large", TOO_LARGE, grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"Received message larger than max ({TOO_LARGE.ByteSize()} vs. {MAX_MESSAGE_BYTES})",
            counted_as=None),
    ]  # fmt: skip


def requests_counted(model: str, code: str) -> float:
    labels = {"model": model, "version": "", "code": code}
    return REGISTRY.get_sample_value("headwater_gateway_requests_total", labels) or 0.0


@pytest.fixture
async def small_gateway(deployed, start_gateway: GatewayFactory) -> GatewayServer:
    """A gateway with a small gRPC message limit (64 KiB), serving MODEL version 1."""
    server = await start_gateway(max_message_bytes=MAX_MESSAGE_BYTES)
    assert server.ready.is_set()
    return server


@pytest.fixture
async def channel(small_gateway: GatewayServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(small_gateway.target) as chan:
        yield chan


async def good(stub: oip_pb2_grpc.GRPCInferenceServiceStub) -> list[str]:
    """One good request; its prediction ids."""
    response = await stub.ModelInfer(infer_request([ROW, ROW]), timeout=5)
    assert (response.model_version, list(response.outputs[0].contents.bool_contents)) == (
        "1",
        [True, True],
    )
    return prediction_ids(response)


async def test_a_burst_of_bad_requests_is_refused_precisely_and_good_ones_all_succeed(
    small_gateway: GatewayServer, channel: grpc.aio.Channel, kafka_settings: KafkaSettings
) -> None:
    stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
    cases = bad_requests()
    before = {
        (m, c): requests_counted(m, c) for m in (MODEL, UNKNOWN_MODEL) for c in
        ("INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE")
    }  # fmt: skip

    async def refused(case: Bad) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(case.request, timeout=5)
        assert caught.value.code() is case.code, (case.name, caught.value.details())
        assert case.message in (caught.value.details() or ""), case.name

    # one at a time, each followed by a good request ...
    ids: list[str] = []
    for case in cases:
        await refused(case)
        ids += await good(stub)
    # ... then three rounds of all of them at once, interleaved with as many good ones
    for _ in range(3):
        outcomes = await asyncio.gather(
            *(refused(case) for case in cases), *(good(stub) for _ in cases)
        )
        ids += [i for outcome in outcomes if outcome for i in outcome]

    assert len(ids) == len(set(ids)) == 4 * len(cases) * 2
    for (model, code), count in before.items():
        expected = 4 * sum(1 for c in cases if c.counted_as == model and c.code.name == code)
        assert requests_counted(model, code) - count == expected, (model, code)

    # still healthy, and the prediction events are exactly those of the good requests
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", model_health_name(MODEL)):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == SERVING, service
    assert (await stub.ServerReady(oip_pb2.ServerReadyRequest(), timeout=5)).ready
    await small_gateway.producer.flush(timeout_s=15)
    assert small_gateway.service.events_dropped == 0
    records = await read_to_end(kafka_settings, Topic.PREDICTIONS)
    assert sorted(r.key.decode() for r in records) == sorted(ids)


async def test_an_undecodable_request_body_is_refused_and_the_gateway_goes_on(
    small_gateway: GatewayServer, channel: grpc.aio.Channel
) -> None:
    raw_call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
    for body in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12" * 100):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw_call(body, timeout=5)
        assert caught.value.code() is not grpc.StatusCode.OK
        await good(stub)
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == SERVING


async def test_an_undecodable_request_body_gets_a_clean_status(
    small_gateway: GatewayServer, channel: grpc.aio.Channel
) -> None:
    raw_call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_call(b"\xff\xff\xff\xff", timeout=5)
    assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert "<class" not in (caught.value.details() or "")
    assert "DecodeError" not in (caught.value.details() or "")
