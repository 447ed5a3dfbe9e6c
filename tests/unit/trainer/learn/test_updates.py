"""The model-updates index: only verified updates are noted; the rest is dead-lettered."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from river import linear_model

from headwater.services.trainer.learn.pool import ExampleOutcome, LearnerPool
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.shared.bus.codec import protobuf_header
from headwater.shared.bus.dead_letter import REASON_HEADER, SOURCE_TOPIC_HEADER
from headwater.shared.pb import events_pb2
from tests.fakes import FakeProducer
from tests.signed_updates import forgeries, signed_update
from tests.unit.trainer.learn.conftest import (
    CODEC,
    FakeRegistry,
    feed,
    make_pool,
    new_index,
    save,
)

TOPIC = "hw.model-updates"
NOT_SIGNED = "artifact signature does not verify: wrong signing key or tampered content"


def consumer_record(value: bytes | None, offset: int, key: bytes = b"m") -> ConsumerRecord:
    headers = [protobuf_header()]
    return ConsumerRecord(
        TOPIC, 0, offset, 0, 0, key, value, None, len(key), len(value or b""), headers
    )


def dead_letters(index: UpdateIndex) -> FakeProducer:
    return index._policy.producer  # type: ignore[return-value]


async def test_forged_updates_are_dead_lettered_and_nothing_of_them_is_noted() -> None:
    index = new_index()
    genuine = signed_update(CODEC, linear_model.LogisticRegression(), "m", 1, sequence=4)
    forged = forgeries(genuine, other_model="n")
    records = [consumer_record(f.SerializeToString(), i) for i, (_, f) in enumerate(forged)]
    for record in records:
        await index.read(record)
    assert index.latest("m") is None and index.latest("n") is None
    assert (index.max_sequence("m"), index.max_sequence("n")) == (0, 0)  # not 1004
    await index.read(consumer_record(genuine.SerializeToString(), len(records)))
    saved = index.latest("m")
    assert saved is not None and saved.update == genuine
    assert saved.progress.offsets[0].last == 9 and index.max_sequence("m") == 4

    sent = dead_letters(index).sent
    assert [letter.value for letter in sent] == [r.value for r in records]  # the original bytes
    reasons = [dict(letter.headers)[REASON_HEADER].decode() for letter in sent]
    assert reasons == [
        f"ModelUpdate for {f.model!r} (sequence {f.sequence}) does not verify: {NOT_SIGNED}"
        for _, f in forged
    ]
    assert all(dict(letter.headers)[SOURCE_TOPIC_HEADER] == TOPIC.encode() for letter in sent)


async def test_an_older_trainers_update_and_garbage_are_dead_lettered_tombstones_skipped() -> None:
    index = new_index()
    artifact = CODEC.encode(linear_model.LogisticRegression())
    old = events_pb2.ModelUpdate(  # the state signed alone, its progress in a header
        model="m", base_version=1, sequence=3, state=artifact.content,
        sha256=artifact.sha256, signature=artifact.signature, examples_learned=10,
    )  # fmt: skip
    await index.read(consumer_record(old.SerializeToString(), 0))
    await index.read(consumer_record(b"\xff\x00 not protobuf", 1))
    await index.read(consumer_record(None, 2))
    assert index.latest("m") is None and index.max_sequence("m") == 0
    reasons = [dict(letter.headers)[REASON_HEADER].decode() for letter in dead_letters(index).sent]
    assert len(reasons) == 2
    assert reasons[0].startswith(
        "ModelUpdate for 'm' (sequence 3) has no embedded progress: an older trainer's format"
    )
    assert reasons[1].startswith("malformed protobuf ModelUpdate")


async def test_a_restarted_pool_restores_from_the_genuine_update_not_a_forged_one() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    first = make_pool(registry)
    await feed(first, range(6))
    genuine = await save(first)
    index = new_index()
    for offset, (_, forged) in enumerate(forgeries(genuine, other_model="n")):
        await index.read(consumer_record(forged.SerializeToString(), offset))
    await index.read(consumer_record(genuine.SerializeToString(), 3))

    restored: LearnerPool = make_pool(registry, index)
    assert await feed(restored, range(6)) == [ExampleOutcome.ALREADY_CONSUMED] * 6
    assert restored.find("m").learner.progress() == first.find("m").learner.progress()
    assert await feed(restored, [6]) == [ExampleOutcome.LEARNED]
    assert (await save(restored)).sequence == genuine.sequence + 1  # not after the forged 1001
    assert len(dead_letters(index).sent) == 3
