"""Malformed records on registry-events and model-updates: dead-lettered, the gateway goes on."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import grpc
import pytest
from aiokafka import ConsumerRecord

from headwater.services.gateway.server import GatewayServer
from headwater.shared.bus.codec import encode_event, encode_event_json, json_header, protobuf_header
from headwater.shared.bus.dead_letter import REASON_HEADER, SOURCE_TOPIC_HEADER
from headwater.shared.bus.producer import EventProducer, OutgoingRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.features import features_to_proto, target_to_proto
from headwater.shared.pb import events_pb2, oip_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.faults.support import read_to_end
from tests.fixtures import eventually
from tests.integration.gateway.conftest import (
    CODEC,
    MODEL,
    ROW,
    answer_when,
    create_version,
    infer_request,
    model_update,
    trained,
)
from tests.signed_updates import forgeries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

K = events_pb2.RegistryEventKind
PROTOBUF = [protobuf_header()]


@dataclass(frozen=True)
class BadRecord:
    """A record no gateway can apply, and the reason its dead letter must give."""

    topic: Topic
    value: bytes | None
    headers: list[tuple[str, bytes]]
    reason: str


def prediction_event() -> events_pb2.PredictionEvent:
    return events_pb2.PredictionEvent(
        prediction_id="p-1", model=MODEL, version=1, features=features_to_proto(ROW)
    )


def feedback_event() -> events_pb2.FeedbackEvent:
    return events_pb2.FeedbackEvent(prediction_id="p-1", label=target_to_proto(True))


def bad_records() -> list[BadRecord]:
    """Garbage, wrong message types, wrong content types, and events missing what they need."""
    re, mu = Topic.REGISTRY_EVENTS, Topic.MODEL_UPDATES
    prediction, feedback = encode_event(prediction_event()), encode_event(feedback_event())
    feedback_json = encode_event_json(feedback_event())
    return [
        BadRecord(re, b"\xff\x00 not protobuf", PROTOBUF, "malformed protobuf RegistryEvent"),
        BadRecord(re, prediction, PROTOBUF, "malformed protobuf RegistryEvent: "),
        BadRecord(re, feedback, PROTOBUF, "RegistryEvent names no model"),
        BadRecord(re, feedback_json, [json_header()],
                  'malformed JSON RegistryEvent: Message type "headwater.events.v1.RegistryEvent"'
                  ' has no field named "label"'),
        BadRecord(re, b"model,kind\nchurn,5", [("content-type", b"text/csv")],
                  "unsupported content-type 'text/csv'"),
        BadRecord(re, None, PROTOBUF, "RegistryEvent record has no value"),
        BadRecord(re, encode_event(events_pb2.RegistryEvent(model=MODEL)), PROTOBUF,
                  "RegistryEvent for 'churn' has no kind"),
        BadRecord(re, encode_event(events_pb2.RegistryEvent(
                      model=MODEL, kind=K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED)), PROTOBUF,
                  "DEPLOYMENT_CHANGED event for 'churn' has no deployment"),
        BadRecord(mu, b"\xff\x00 not protobuf", PROTOBUF, "malformed protobuf ModelUpdate"),
        BadRecord(mu, prediction, PROTOBUF,
                  "ModelUpdate for 'p-1' needs base_version >= 1 and sequence >= 1, got 0 and 1"),
        BadRecord(mu, feedback_json, [json_header()],
                  'malformed JSON ModelUpdate: Message type "headwater.events.v1.ModelUpdate"'
                  ' has no field named "label"'),
        BadRecord(mu, b"{}", [("content-type", b"application/xml")],
                  "unsupported content-type 'application/xml'"),
        BadRecord(mu, encode_event(events_pb2.ModelUpdate(model=MODEL, base_version=1,
                                                          sequence=3)), PROTOBUF,
                  "ModelUpdate for 'churn' has no state"),
        BadRecord(mu, encode_event(events_pb2.ModelUpdate(model=MODEL, base_version=1, sequence=3,
                                                          state=b"x")), PROTOBUF,
                  "ModelUpdate for 'churn' has no signature"),
        *refused_updates(),  # last: a batch dead-letters what does not verify after the rest
    ]  # fmt: skip


def refused_updates() -> list[BadRecord]:
    """Well-formed updates that do not verify: forged, or an older trainer's, newest first."""
    genuine = model_update(3, positive=False)
    artifact = CODEC.encode(trained(False))
    old = events_pb2.ModelUpdate(  # its state signed alone, its progress in a record header
        model=MODEL, base_version=1, sequence=2, state=artifact.content,
        sha256=artifact.sha256, signature=artifact.signature,
    )  # fmt: skip
    mu = Topic.MODEL_UPDATES
    return [
        *(
            BadRecord(mu, encode_event(u), PROTOBUF,
                      f"ModelUpdate for {u.model!r} (sequence {u.sequence}) does not verify")
            for _, u in forgeries(genuine, other_model="other")
        ),
        BadRecord(mu, encode_event(old), PROTOBUF,
                  "ModelUpdate for 'churn' (sequence 2) has no embedded progress"),
    ]  # fmt: skip


async def test_malformed_events_are_dead_lettered_and_the_good_ones_after_them_applied(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    client: RegistryClient,
    kafka_settings: KafkaSettings,
) -> None:
    bad = bad_records()
    producer = EventProducer(kafka_settings, client_id="test-foreign-producer")
    await producer.start()
    try:
        for record in bad:  # same key as the good ones: same partition, so they come first
            await producer.send_raw_and_wait(
                OutgoingRecord(record.topic, MODEL.encode(), record.value, tuple(record.headers))
            )
        # a tombstone on the compacted topic is not an error: skipped, not dead-lettered
        await producer.send_raw_and_wait(OutgoingRecord(Topic.MODEL_UPDATES, MODEL.encode(), None))  # type: ignore[arg-type]
        await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, model_update(4, positive=False))
    finally:
        await producer.stop(grace_s=2)

    response = await answer_when(
        stub, lambda r: r.parameters["live_sequence"].int64_param == 4, "the good live update"
    )
    assert response.outputs[0].contents.bool_contents[0] is False

    await create_version(client, estimator=trained(True))
    await client.deploy(MODEL, 2)

    response = await answer_when(
        stub, lambda r: r.model_version == "2", "the deployment after bad events"
    )
    assert response.outputs[0].contents.bool_contents[0] is True

    letters = await read_to_end(kafka_settings, Topic.DEAD_LETTER)
    assert gateway.registry_events.handler.policy.rejected == len(bad)  # type: ignore[attr-defined]
    assert len(letters) == len(bad)
    by_source: dict[str, list[ConsumerRecord]] = defaultdict(list)
    for letter in letters:
        by_source[dict(letter.headers)[SOURCE_TOPIC_HEADER].decode()].append(letter)
    assert set(by_source) == {kafka_settings.topic(t.value) for t in {r.topic for r in bad}}
    for source, got in by_source.items():
        expected = [r for r in bad if kafka_settings.topic(r.topic.value) == source]
        assert len(got) == len(expected), source
        for record, letter in zip(expected, got, strict=True):  # one partition: in order
            headers = dict(letter.headers)
            assert record.reason in headers[REASON_HEADER].decode(), (record.reason, headers)
            assert letter.key == MODEL.encode()
            assert letter.value == (record.value or b"")  # the original bytes
            for name, value in record.headers:  # the original headers are kept
                assert headers[name] == value

    ready = await stub.ServerReady(oip_pb2.ServerReadyRequest(), timeout=5)
    assert ready.ready


async def test_the_gateway_answers_while_garbage_floods_its_consumers(
    gateway: GatewayServer,
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    kafka_settings: KafkaSettings,
) -> None:
    flood = 300
    policy = gateway.registry_events.handler.policy  # type: ignore[attr-defined]
    done = asyncio.Event()

    async def keep_asking() -> int:
        answered = 0
        while not done.is_set():
            response = await stub.ModelInfer(infer_request([ROW]), timeout=2)
            assert response.model_version == "1"
            answered += 1
        return answered

    asking = asyncio.create_task(keep_asking())
    producer = EventProducer(kafka_settings, client_id="test-flood")
    await producer.start()
    try:
        for i in range(flood):
            topic = Topic.REGISTRY_EVENTS if i % 2 else Topic.MODEL_UPDATES
            producer.publish_raw(topic, f"k{i}".encode(), b"\xff\x00" + bytes([i % 256]))
        await producer.flush(timeout_s=15)

        async def all_dead_lettered() -> bool:
            return policy.rejected >= flood or asking.done()

        await eventually(all_dead_lettered, timeout_s=30, what=f"{flood} records dead-lettered")
    finally:
        done.set()
        answered = await asking  # raises if any answer failed
        await producer.stop(grace_s=2)
    assert policy.rejected == flood
    assert answered > 0
    letters = await read_to_end(kafka_settings, Topic.DEAD_LETTER)
    assert len(letters) == flood
    assert {letter.key for letter in letters} == {f"k{i}".encode() for i in range(flood)}
    with pytest.raises(grpc.aio.AioRpcError):  # and still validates
        await stub.ModelInfer(infer_request([{"x1": float("nan"), "x2": 1.0}]), timeout=2)
