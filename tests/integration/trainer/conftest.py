"""A registry per test, a factory of trainers against it, and the trainer tests' shared helpers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from headwater.services.registry.server import RegistryServer
from headwater.services.trainer.learn.learner import Example, Learner, Position
from headwater.services.trainer.server import TrainerServer
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import decode_event, encode_event, protobuf_header
from headwater.shared.bus.topics import Topic
from headwater.shared.features import (
    features_from_proto,
    features_to_proto,
    target_from_proto,
    target_to_proto,
)
from headwater.shared.model_updates import verify_update
from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import ArtifactSettings, KafkaSettings, RegistryClientSettings
from tests.fixtures import eventually, produce_records, unique_name

SPEC = (
    '{"pipeline": [{"component": "preprocessing.StandardScaler"},'
    ' {"component": "linear_model.LogisticRegression"}]}'
)
FEATURES = [("x1", "float"), ("x2", "float")]
MODEL = "churn"
CODEC = ArtifactCodec.from_settings(ArtifactSettings())


def trainer_settings(kafka: KafkaSettings, registry_target: str, **overrides) -> TrainerSettings:
    values = {
        "kafka": kafka,
        "registry": RegistryClientSettings(target=registry_target),
        "app_id": unique_name("trainer"),
        "port": 0,
        "session_timeout_s": 2.0,
        "join_sweep_interval_s": 0.5,
        "registry_retry_s": 0.2,
        "start_timeout_s": 30.0,
        **overrides,
    }
    return TrainerSettings(**values)


@pytest.fixture
async def deployed(client: RegistryClient) -> int:
    """MODEL (binary; x1, x2) with version 1 built from SPEC and deployed live."""
    await client.create_model(MODEL, "binary", FEATURES)
    version = await client.create_version(MODEL, SPEC)
    await client.deploy(MODEL, version.version)
    return version.version


TrainerFactory = Callable[..., Awaitable[TrainerServer]]


@pytest.fixture
async def start_trainer(
    registry: RegistryServer, kafka_settings: KafkaSettings
) -> AsyncIterator[TrainerFactory]:
    """Start (ready) trainers against the test registry; all stopped after the test."""
    started: list[TrainerServer] = []

    async def start(**overrides) -> TrainerServer:
        server = TrainerServer(trainer_settings(kafka_settings, registry.target, **overrides))
        started.append(server)
        await server.start()
        await server.wait_ready(30)
        return server

    yield start
    for server in started:
        await server.stop(grace_s=3)


def labeled(i: int, model: str = MODEL, example_id: str | None = None) -> events_pb2.LabeledExample:
    """Example i of a deterministic, learnable stream (label: x1 + x2 > 1)."""
    x1, x2 = (i * 37 % 100) / 100, (i * 61 % 100) / 100
    example = events_pb2.LabeledExample(example_id=example_id or f"ex-{i}", model=model)
    for name, value in features_to_proto({"x1": x1, "x2": x2}).items():
        example.features[name].CopyFrom(value)
    example.label.CopyFrom(target_to_proto(x1 + x2 > 1))
    return example


def stream(start: int, stop: int) -> list[events_pb2.LabeledExample]:
    return [labeled(i) for i in range(start, stop)]


async def produce_examples(
    kafka: KafkaSettings, examples: Iterable[events_pb2.LabeledExample]
) -> None:
    """Write examples to ``examples`` keyed by model, as any producer would."""
    await produce_records(
        kafka,
        [(Topic.EXAMPLES, e.model, encode_event(e), [protobuf_header()]) for e in examples],
    )


async def read_keyed_updates(kafka: KafkaSettings) -> list[tuple[str, events_pb2.ModelUpdate]]:
    """Every ModelUpdate on the topic so far with its record key, in offset order per partition."""
    name = kafka.topic(Topic.MODEL_UPDATES.value)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        updates = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                updates += [
                    ((r.key or b"").decode(), decode_event(events_pb2.ModelUpdate, r.value))
                    for r in records
                ]
        return updates
    finally:
        await consumer.stop()


async def read_updates(kafka: KafkaSettings) -> list[events_pb2.ModelUpdate]:
    """Every ModelUpdate on the topic so far, in offset order per partition."""
    return [update for _, update in await read_keyed_updates(kafka)]


async def update_with(kafka: KafkaSettings, **expected) -> events_pb2.ModelUpdate:
    """Wait for a ModelUpdate whose fields have the expected values."""

    async def probe():
        for update in reversed(await read_updates(kafka)):
            if all(getattr(update, k) == v for k, v in expected.items()):
                return update
        return None

    return await eventually(probe, timeout_s=20, interval_s=0.2, what=f"update {expected}")


async def reference(client: RegistryClient, version: int, examples) -> Learner:
    """The same learning in-process: the version's artifact, test-then-train on ``examples``."""
    found = await client.get_artifact(MODEL, version)
    model = CODEC.decode(found.content, found.version.artifact.signature)
    learner = Learner(MODEL, "classifier", base_version=version, model=model)
    for offset, example in enumerate(examples):
        learner.process(
            Example(
                example.example_id,
                features_from_proto(example.features),
                target_from_proto(example.label),
            ),
            Position("t", 0, offset),
        )
    return learner


PROBE = [{"x1": i / 10, "x2": (9 - i) / 10 + 0.05} for i in range(10)]


def answers(model) -> list:
    return [model.predict_proba_one(x) for x in PROBE]


def state_of(update: events_pb2.ModelUpdate):
    verify_update(CODEC, update)
    return CODEC.decode_addressed(update.state, update.sha256)


def new_id() -> str:
    return uuid.uuid4().hex
