"""The gateway swapping in what it consumes: deployments, live updates; bad events dead-lettered."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from headwater.services.gateway.live_updates import UpdatePlan
from headwater.services.gateway.server import GatewayServer
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2, oip_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, read_records
from tests.integration.gateway.conftest import (
    FEATURES,
    MODEL,
    ROW,
    answer_when,
    create_version,
    infer_request,
    model_update,
    trained,
)
from tests.signed_updates import forgeries

pytestmark = pytest.mark.integration


async def test_new_deployment_is_served_without_restart(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    client: RegistryClient,
) -> None:
    before = await stub.ModelInfer(infer_request([ROW]), timeout=5)
    assert before.outputs[0].contents.bool_contents[0] is True
    await create_version(client, estimator=trained(False))
    await client.deploy(MODEL, 2)

    after = await answer_when(stub, lambda r: r.model_version == "2", "version 2 served")
    assert after.outputs[0].contents.bool_contents[0] is False
    assert after.parameters["headwater_version"].int64_param == 2


async def test_model_deployed_after_start_is_served(
    registry, client: RegistryClient, start_gateway
) -> None:
    gateway = await start_gateway()
    assert gateway.ready.is_set() and not gateway.cache.entries()
    await client.create_model("fresh", "binary", [("x1", "float"), ("x2", "float")])
    await create_version(client, model="fresh", estimator=trained(True))
    await client.deploy("fresh", 1)
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        ready = oip_pb2.ModelReadyRequest(name="fresh")

        async def is_ready() -> bool:
            try:
                return (await stub.ModelReady(ready, timeout=5)).ready
            except grpc.aio.AioRpcError:
                return False

        await eventually(is_ready, timeout_s=15, what="fresh model ready")
        response = await stub.ModelInfer(infer_request([ROW], model="fresh"), timeout=5)
        assert response.model_version == "1"
        dense = oip_pb2.ModelInferRequest(model_name="fresh")
        dense.inputs.add(name="input__0", datatype="FP32", shape=[1, 2])
        dense.raw_input_contents.append(np.array([[1, 1]], "<f4").tobytes())
        response = await stub.ModelInfer(dense, timeout=5)
        assert np.frombuffer(response.raw_output_contents[0], "?").tolist() == [True]


async def test_live_update_is_swapped_in_and_a_tampered_one_refused(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    kafka_settings: KafkaSettings,
) -> None:
    producer = EventProducer(kafka_settings, client_id="test-learner")
    await producer.start()
    try:
        await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, model_update(1, positive=False))

        response = await answer_when(
            stub, lambda r: r.parameters["live_sequence"].int64_param == 1, "live update 1 served"
        )
        assert response.model_version == "1"
        assert response.outputs[0].contents.bool_contents[0] is False

        tampered = model_update(2, positive=True, codec=ArtifactCodec("not-the-platform-key"))
        await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, tampered)

        async def refused() -> bool:
            return gateway.updater.counts[UpdatePlan.REFUSED] >= 1

        await eventually(refused, timeout_s=15, what="tampered update refused")
        response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
        assert response.parameters["live_sequence"].int64_param == 1
        assert response.outputs[0].contents.bool_contents[0] is False
    finally:
        await producer.stop(grace_s=2)


async def test_live_update_published_before_start_is_served_at_start(
    deployed, start_gateway, kafka_settings: KafkaSettings
) -> None:
    producer = EventProducer(kafka_settings, client_id="test-learner")
    await producer.start()
    try:
        await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, model_update(3, positive=False))
    finally:
        await producer.stop(grace_s=2)
    gateway = await start_gateway()
    assert gateway.cache.get(MODEL).versions[1].live_sequence == 3


async def test_forged_live_updates_are_dead_lettered_and_never_served(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    client: RegistryClient,
    kafka_settings: KafkaSettings,
) -> None:
    await client.create_model("other", "binary", FEATURES)  # the same schema as MODEL
    await create_version(client, model="other", estimator=trained(True))
    await client.deploy("other", 1)

    async def other_served() -> bool:
        return _served_sequence(gateway, "other", 1) is not None

    await eventually(other_served, timeout_s=15, what="other model served")
    genuine = model_update(1, positive=False)
    forged = forgeries(genuine, other_model="other")
    producer = EventProducer(kafka_settings, client_id="test-forger")
    await producer.start()
    try:
        await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, genuine)
        for _, update in forged:  # same key as the genuine one: read after it, in order
            await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, update)
        letters = await read_records(kafka_settings, Topic.DEAD_LETTER, len(forged))
    finally:
        await producer.stop(grace_s=2)
    reasons = [dict(r.headers)[REASON_HEADER].decode() for r in letters]
    assert reasons == [
        f"ModelUpdate for {u.model!r} (sequence {u.sequence}) does not verify: artifact "
        "signature does not verify: wrong signing key or tampered content"
        for _, u in forged
    ]
    assert [r.value for r in letters] == [u.SerializeToString() for _, u in forged]
    assert gateway.updater.counts[UpdatePlan.REFUSED] == len(forged)
    assert _served_sequence(gateway, MODEL, 1) == 1  # the genuine one, not the raised 1001
    assert _served_sequence(gateway, "other", 1) == 0  # the replay was not swapped in
    response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
    assert response.parameters["live_sequence"].int64_param == 1


def _served_sequence(gateway: GatewayServer, model: str, version: int) -> int | None:
    entry = gateway.cache.find(model)
    served = entry.versions.get(version) if entry is not None else None
    return None if served is None else served.live_sequence


async def test_malformed_events_are_dead_lettered_and_consumers_go_on(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    kafka_settings: KafkaSettings,
) -> None:
    producer = EventProducer(kafka_settings, client_id="test-garbage")
    await producer.start()
    try:
        for topic in (Topic.REGISTRY_EVENTS, Topic.MODEL_UPDATES):
            producer.publish_raw(topic, MODEL.encode(), b"\xff\x00 not protobuf")
        producer.publish_raw(
            Topic.MODEL_UPDATES,
            MODEL.encode(),
            events_pb2.ModelUpdate(model=MODEL, base_version=1, sequence=5).SerializeToString(),
        )
        records = await read_records(kafka_settings, Topic.DEAD_LETTER, 3)
        reasons = sorted(dict(r.headers)[REASON_HEADER].decode() for r in records)
        assert any(r.startswith("malformed protobuf RegistryEvent") for r in reasons)
        assert any(r.startswith("malformed protobuf ModelUpdate") for r in reasons)
        assert "ModelUpdate for 'churn' has no state" in reasons
        # the model-updates consumer still applies a good update after the bad ones
        await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, model_update(6, positive=False))

        async def applied() -> bool:
            return gateway.cache.get(MODEL).versions[1].live_sequence == 6

        await eventually(applied, timeout_s=15, what="good update after bad ones")
    finally:
        await producer.stop(grace_s=2)
    response = await stub.ModelInfer(infer_request([ROW]), timeout=5)
    assert response.parameters["live_sequence"].int64_param == 6
