"""The learner pool on an in-memory registry: saving, committing, restoring, deploying."""

from __future__ import annotations

import threading

import pytest

from headwater.services.trainer.learn.checkpoints import CHECKPOINT_TAG
from headwater.services.trainer.learn.loading import NOT_DEPLOYED_CACHE_SIZE
from headwater.services.trainer.learn.pool import ExampleOutcome, LearnerPool
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import ModelNotFound, Unavailable
from headwater.shared.features import features_to_proto, target_to_proto
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import lineage as make_lineage
from headwater.shared.registry_client import route
from headwater.shared.settings import KafkaSettings
from headwater.shared.specs import build_model
from tests.fakes import FakeProducer

SPEC = '{"component": "linear_model.LogisticRegression"}'
CODEC = ArtifactCodec("unit-key")
TOPIC = "hw.examples"


class FakeRegistry:
    """Versions, deployments and models in memory, with the client's method names."""

    def __init__(self) -> None:
        self.versions: dict[int, registry_pb2.ModelVersion] = {}
        self.contents: dict[int, bytes] = {}
        self.deployed: int | None = None
        self.calls: list[str] = []
        self.down = False
        self.created_artifacts: list[bytes] = []
        self.lose_answers = 0  # create_version commits, then raises Unavailable (a timeout)
        self.down_after_create = False  # ... and the registry stays unreachable after it
        self.add_version(build_model(SPEC, seed=1))

    def add_version(self, estimator, lineage=None, tags=None) -> int:
        number = len(self.versions) + 1
        artifact = CODEC.encode(estimator)
        self.versions[number] = registry_pb2.ModelVersion(
            model="m",
            version=number,
            spec_json=SPEC,
            lineage=lineage or make_lineage(seed=1),
            artifact=registry_pb2.Artifact(sha256=artifact.sha256, signature=artifact.signature),
            tags=dict(tags or {}),
        )
        self.contents[number] = artifact.content
        return number

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise Unavailable("registry down")

    async def get_deployment(self, model: str) -> registry_pb2.Deployment:
        self._check("get_deployment")
        if self.deployed is None:
            raise ModelNotFound(f"model {model!r} has no deployment")
        return registry_pb2.Deployment(model=model, routes=[route(self.deployed)])

    async def get_model(self, model: str) -> registry_pb2.Model:
        self._check("get_model")
        features = [registry_pb2.Feature(name="x", type=registry_pb2.FEATURE_TYPE_FLOAT)]
        return registry_pb2.Model(name=model, task=registry_pb2.TASK_BINARY, features=features)

    async def get_artifact(self, model: str, ref: int) -> registry_pb2.GetArtifactResponse:
        self._check("get_artifact")
        return registry_pb2.GetArtifactResponse(
            version=self.versions[ref], content=self.contents[ref]
        )

    async def create_version(self, model, spec_json, lineage=None, **kwargs):
        self._check("create_version")
        estimator = CODEC.decode(kwargs["artifact"], kwargs["artifact_signature"])
        self.created_artifacts.append(kwargs["artifact"])
        number = self.add_version(estimator, lineage, kwargs.get("tags"))
        if self.lose_answers:
            self.lose_answers -= 1
            self.down = self.down_after_create
            raise Unavailable("deadline exceeded")
        return self.versions[number]

    async def list_versions(self, model: str) -> list[registry_pb2.ModelVersion]:
        self._check("list_versions")
        return list(self.versions.values())


def record(offset: int, example_id: str | None = None, x: float | str = 1.0) -> ConsumedRecord:
    example = events_pb2.LabeledExample(example_id=example_id or f"e{offset}", model="m")
    if isinstance(x, str):
        example.features["x"].string_value = x
    else:
        example.features["x"].CopyFrom(features_to_proto({"x": x * (offset % 3 - 1)})["x"])
    example.label.CopyFrom(target_to_proto(offset % 3 == 2))
    return ConsumedRecord(TOPIC, 0, offset, b"m", encode_event(example))


class Rejects(list):
    async def __call__(self, record: ConsumedRecord, reason: str) -> None:
        self.append((record.offset, reason))


def new_index(codec: ArtifactCodec = CODEC) -> UpdateIndex:
    return UpdateIndex(KafkaSettings(bootstrap="127.0.0.1:1"), "test", codec, FakeProducer())  # type: ignore[arg-type]


def make_pool(registry: FakeRegistry, index: UpdateIndex | None = None, **settings) -> LearnerPool:
    values = {"checkpoint_every_examples": 1000, "sync_interval_ms": 250, **settings}
    return LearnerPool(
        TrainerSettings(kafka=KafkaSettings(bootstrap="127.0.0.1:1"), **values),
        registry,  # type: ignore[arg-type]
        CODEC,
        index or new_index(),
        clock=lambda: 0.0,
    )


async def save(pool: LearnerPool) -> events_pb2.ModelUpdate:
    [model] = pool.due_updates(force=True)
    update = await pool.build_update(model)
    pool.saved(model, update)
    return update


async def feed(pool: LearnerPool, offsets, rejects=None) -> list[ExampleOutcome]:
    rejects = rejects if rejects is not None else Rejects()
    return [(await pool.process(record(o), rejects)).outcome for o in offsets]


async def test_commit_never_passes_what_is_not_saved_yet() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry)
    assert await feed(pool, range(10)) == [ExampleOutcome.LEARNED] * 10
    assert pool.commit_offsets({(TOPIC, 0): 10}) == {(TOPIC, 0): 0}
    await save(pool)
    assert pool.commit_offsets({(TOPIC, 0): 10}) == {(TOPIC, 0): 10}
    await feed(pool, range(10, 14))
    assert pool.commit_offsets({(TOPIC, 0): 14, (TOPIC, 1): 3}) == {(TOPIC, 0): 10, (TOPIC, 1): 3}


async def test_a_crashed_pool_resumes_from_the_saved_update_without_learning_twice() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    index = new_index()
    first = make_pool(registry, index)
    await feed(first, range(10))
    await save(first)
    await feed(first, range(10, 14))  # learned, never saved: lost with the crash
    committed = first.commit_offsets({(TOPIC, 0): 14})[(TOPIC, 0)]

    second = make_pool(registry, index)
    # the group resumes at the committed offset; a replay from 0 changes nothing either
    assert await feed(second, range(0, committed)) == [ExampleOutcome.ALREADY_CONSUMED] * 10
    assert await feed(second, range(committed, 14)) == [ExampleOutcome.LEARNED] * 4
    assert second.find("m").learner.examples_learned == 14

    uninterrupted = make_pool(FakeRegistry(), None)
    uninterrupted.registry.deployed = 1  # type: ignore[attr-defined]
    await feed(uninterrupted, range(14))
    assert second.find("m").learner.progress() == uninterrupted.find("m").learner.progress()


async def test_sequences_never_repeat_even_when_a_send_fails() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry)
    await feed(pool, range(3))
    lost = await pool.build_update("m")  # never acknowledged
    update = await save(pool)
    assert update.sequence == lost.sequence + 1
    assert pool.due_updates(force=True) == []


async def test_examples_of_models_without_deployment_are_dead_lettered_not_dropped() -> None:
    registry = FakeRegistry()
    pool = make_pool(registry)
    rejects = Rejects()
    assert await feed(pool, range(3), rejects) == [ExampleOutcome.NOT_DEPLOYED] * 3
    assert rejects == [
        (o, "model 'm' is not deployed: model 'm' has no deployment") for o in range(3)
    ]
    assert registry.calls.count("get_deployment") == 1  # remembered for a while
    registry.deployed = 1
    pool.on_registry_event(
        events_pb2.RegistryEvent(model="m", kind=events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED)
    )
    assert await feed(pool, [3]) == [ExampleOutcome.LEARNED]


async def test_registry_outage_leaves_nothing_half_done() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    registry.down = True
    pool = make_pool(registry)
    with pytest.raises(Unavailable):
        await pool.process(record(0), Rejects())
    registry.down = False
    assert await feed(pool, [0]) == [ExampleOutcome.LEARNED]


async def test_bad_examples_are_rejected_before_the_learner_moves_on() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry)
    rejects = Rejects()
    outcome = await pool.process(record(0, x="high"), rejects)
    assert outcome.outcome is ExampleOutcome.DEAD_LETTER
    assert rejects == [(0, "feature 'x' must be a float, got str 'high'")]
    assert pool.find("m").learner.next_offset(TOPIC, 0) == 1

    async def broken(record, reason):
        raise Unavailable("dead-letter topic unreachable")

    with pytest.raises(Unavailable):
        await pool.process(record(1, x="high"), broken)
    assert pool.find("m").learner.next_offset(TOPIC, 0) == 1  # retried later
    garbage = ConsumedRecord(TOPIC, 0, 2, b"m", b"\xff\xff")
    assert (await pool.process(garbage, rejects)).outcome is ExampleOutcome.DEAD_LETTER


async def test_checkpoint_then_its_deployment_rebases_and_another_restarts() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry, checkpoint_every_examples=5)
    await feed(pool, range(6))
    assert pool.due_checkpoints() == ["m"]
    version = await pool.start_checkpoint("m")
    assert version is not None and version.version == 2
    assert version.lineage.parent_version == 1
    assert version.lineage.example_count == 6
    assert [(r.first_offset, r.last_offset) for r in version.lineage.offsets] == [(0, 5)]
    assert version.lineage.source == registry_pb2.VERSION_SOURCE_ONLINE_SNAPSHOT
    assert pool.due_checkpoints() == []

    await feed(pool, range(6, 9))
    changed = events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED
    deployment = registry_pb2.Deployment(model="m", routes=[route(2)])
    pool.on_registry_event(events_pb2.RegistryEvent(model="m", kind=changed, deployment=deployment))
    pool.apply_deployments()
    learner = pool.find("m").learner
    assert (learner.base_version, learner.examples_learned) == (2, 3)
    assert pool.due_updates() == ["m"]  # published under the new base at once

    registry.add_version(build_model(SPEC, seed=9))
    registry.deployed = 3
    deployment = registry_pb2.Deployment(model="m", routes=[route(3)])
    pool.on_registry_event(events_pb2.RegistryEvent(model="m", kind=changed, deployment=deployment))
    pool.apply_deployments()
    assert pool.find("m") is None
    assert await feed(pool, [9]) == [ExampleOutcome.LEARNED]
    assert (
        pool.find("m").learner.base_version,
        pool.find("m").learner.examples_learned,
    ) == (3, 1)


async def test_a_failed_checkpoint_is_retried_later() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry, checkpoint_every_examples=2)
    await feed(pool, range(3))
    registry.down = True
    assert await pool.start_checkpoint("m") is None
    assert pool.find("m").checkpoint_error == "registry down"
    assert pool.find("m").checkpoints.examples == 0
    with pytest.raises(ModelNotFound):
        pool.start_checkpoint("other")


async def test_an_older_update_read_back_after_a_save_does_not_replace_the_newer_one() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    index = new_index()
    pool = make_pool(registry, index)
    await feed(pool, range(3))
    older = await pool.build_update("m")
    index.record(older)
    await feed(pool, range(3, 6))
    newer = await save(pool)
    index.record(older)  # the index's reader catches up with the topic
    latest = index.latest("m")
    assert latest is not None and latest.update.sequence == newer.sequence
    assert latest.update.examples_learned == 6

    restored = make_pool(registry, index)
    assert await feed(restored, range(6)) == [ExampleOutcome.ALREADY_CONSUMED] * 6


async def test_the_models_remembered_as_not_deployed_are_bounded() -> None:
    registry = FakeRegistry()
    pool = make_pool(registry)
    rejects = Rejects()
    for i in range(NOT_DEPLOYED_CACHE_SIZE + 50):
        example = events_pb2.LabeledExample(example_id=f"e{i}", model=f"junk-{i}")
        await pool.process(ConsumedRecord(TOPIC, 0, i, None, encode_event(example)), rejects)
    assert len(rejects) == NOT_DEPLOYED_CACHE_SIZE + 50
    assert len(pool._not_deployed) == NOT_DEPLOYED_CACHE_SIZE  # bounded


async def test_a_checkpoint_whose_answer_was_lost_is_adopted_not_registered_twice() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    registry.lose_answers = 1  # commits, then the client times out
    pool = make_pool(registry, registry_retry_s=0.01)
    await feed(pool, range(4))
    version = await pool.start_checkpoint("m")
    assert version is not None and version.version == 2
    assert registry.calls.count("create_version") == 1
    assert sorted(registry.versions) == [1, 2]  # no second copy
    assert version.tags[CHECKPOINT_TAG] == "m/1/4"
    assert set(pool.find("m").checkpoints.marks) == {2}  # deploying it rebases the learner


async def test_an_unanswered_checkpoint_is_found_before_the_next_one_is_registered() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry, registry_retry_s=0.01)
    await feed(pool, range(4))
    registry.lose_answers = 1
    registry.down_after_create = True  # committed, then the registry is unreachable
    assert await pool.start_checkpoint("m") is None
    assert sorted(registry.versions) == [1, 2]
    registry.down = False
    await feed(pool, range(4, 6))
    newer = await pool.start_checkpoint("m")
    assert newer is not None and newer.version == 3
    assert registry.calls.count("create_version") == 2
    assert set(pool.find("m").checkpoints.marks) == {2, 3}
    assert pool.find("m").checkpoints.marks[2].examples_learned == 4


class ThreadRecordingCodec(ArtifactCodec):
    """The codec, noting which calls ran on the event loop's thread."""

    def __init__(self) -> None:
        super().__init__("unit-key")
        self.on_loop: list[str] = []
        self.off_loop: list[str] = []
        self.signed_on_loop: list[bytes] = []
        self.signed_off_loop: list[bytes] = []

    def _note(self, call: str) -> None:
        main = threading.current_thread() is threading.main_thread()
        (self.on_loop if main else self.off_loop).append(call)

    def encode(self, model):
        self._note("encode")
        return super().encode(model)

    def decode(self, content, signature, sha256=None):
        self._note("decode")
        return super().decode(content, signature, sha256)

    def decode_addressed(self, content, sha256):  # a saved state: its update is signed
        self._note("decode")
        return super().decode_addressed(content, sha256)

    def sign(self, content):
        self._note("sign")
        main = threading.current_thread() is threading.main_thread()
        (self.signed_on_loop if main else self.signed_off_loop).append(bytes(content))
        return super().sign(content)


async def test_model_state_is_decoded_encoded_and_signed_off_the_event_loop() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    codec = ThreadRecordingCodec()
    index = new_index()
    settings = TrainerSettings(kafka=KafkaSettings(bootstrap="127.0.0.1:1"))
    pool = LearnerPool(settings, registry, codec, index, clock=lambda: 0.0)  # type: ignore[arg-type]
    await feed(pool, range(5))
    update = await pool.build_update("m")
    pool.saved("m", update)
    restored = LearnerPool(settings, registry, codec, index, clock=lambda: 0.0)  # type: ignore[arg-type]
    await feed(restored, [5])  # loads the base version and restores the saved state
    version = await restored.start_checkpoint("m")
    assert version is not None
    [checkpointed] = registry.created_artifacts

    assert codec.off_loop.count("decode") == 3  # base artifact twice, saved state once
    assert "encode" in codec.off_loop and "decode" not in codec.on_loop
    assert "encode" not in codec.on_loop
    assert checkpointed in codec.signed_off_loop  # the checkpoint's HMAC
    assert checkpointed not in codec.signed_on_loop
