"""The learner pool saving what it learned: commits, updates and restores, checkpoints."""

from __future__ import annotations

import threading

import pytest

from headwater.services.trainer.learn.checkpoints import CHECKPOINT_TAG
from headwater.services.trainer.learn.pool import ExampleOutcome, LearnerPool
from headwater.services.trainer.learn.routes import LearnerId
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import ModelNotFound
from headwater.shared.settings import KafkaSettings
from tests.unit.trainer.learn.conftest import (
    TOPIC,
    FakeRegistry,
    feed,
    make_pool,
    new_index,
    save,
)


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
    lost = await pool.build_update(LearnerId("m", 1))  # never acknowledged
    update = await save(pool)
    assert update.sequence == lost.sequence + 1
    assert pool.due_updates(force=True) == []


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
    older = await pool.build_update(LearnerId("m", 1))
    index.record(older)
    await feed(pool, range(3, 6))
    newer = await save(pool)
    index.record(older)  # the index's reader catches up with the topic
    latest = index.latest("m")
    assert latest is not None and latest.update.sequence == newer.sequence
    assert latest.update.examples_learned == 6

    restored = make_pool(registry, index)
    assert await feed(restored, range(6)) == [ExampleOutcome.ALREADY_CONSUMED] * 6


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
    update = await pool.build_update(LearnerId("m", 1))
    pool.saved(LearnerId("m", 1), update)
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
