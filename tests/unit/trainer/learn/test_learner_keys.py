"""Each learner's updates under its own key, the index per learner, HTTP and CLI per version."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import ConsumerRecord
from aiokafka.structs import RecordMetadata, TopicPartition
from river import linear_model

from headwater.cli.clients import request_checkpoint
from headwater.services.trainer.http_api import build_web_app
from headwater.services.trainer.learn.consumer import LearningLoop
from headwater.services.trainer.learn.learner import Example, Learner, Position
from headwater.shared.bus.codec import protobuf_header
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import ModelNotFound
from headwater.shared.pb import events_pb2
from tests.signed_updates import signed_update
from tests.unit.trainer.learn.conftest import CODEC, make_pool, new_index
from tests.unit.trainer.learn.routed_fakes import (
    MODEL,
    RoutedRegistry,
    feed_examples,
)


class KeptUpdates:
    """A producer that acknowledges every ModelUpdate and keeps (topic, key, update)."""

    def __init__(self) -> None:
        self.sent: list[tuple[Topic, str, events_pb2.ModelUpdate]] = []

    async def send_and_wait(self, topic, key, message, headers=None) -> RecordMetadata:
        self.sent.append((topic, key, message))
        return RecordMetadata(str(topic), 0, TopicPartition(str(topic), 0), 0, 0, 0, 0)


async def test_the_loop_publishes_each_learners_update_under_model_slash_version() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"), (3, 0.0, "challenger"))
    pool = make_pool(registry)
    await feed_examples(pool, range(4))
    producer = KeptUpdates()
    loop = LearningLoop(pool.settings, pool, producer, pool.index)  # type: ignore[arg-type]

    await loop._sync(force=True)

    assert [(t, k, u.model, u.base_version) for t, k, u in producer.sent] == [
        (Topic.MODEL_UPDATES, f"{MODEL}/{v}", MODEL, v) for v in (1, 2, 3)
    ]
    assert [u.sequence for _, _, u in producer.sent] == [1, 2, 3]
    assert pool.due_updates() == []
    assert [pool.index.latest(MODEL, v).update.examples_learned for v in (1, 2, 3)] == [4, 4, 4]


def update_record(update: events_pb2.ModelUpdate, key: bytes, offset: int) -> ConsumerRecord:
    value = update.SerializeToString()
    return ConsumerRecord(
        "hw.model-updates", 0, offset, 0, 0, key, value, None, len(key), len(value),
        [protobuf_header()],
    )  # fmt: skip


async def test_the_index_keeps_the_latest_update_per_learner_and_refuses_a_wrong_key() -> None:
    index = new_index()
    model = linear_model.LogisticRegression()
    v1 = signed_update(CODEC, model, MODEL, base_version=1, sequence=7)
    v2 = signed_update(CODEC, model, MODEL, base_version=2, sequence=3)
    misrouted = signed_update(CODEC, model, MODEL, base_version=2, sequence=9)
    legacy = signed_update(CODEC, model, MODEL, base_version=1, sequence=5)

    await index.read(update_record(v1, b"m/1", 0))
    await index.read(update_record(v2, b"m/2", 1))
    await index.read(update_record(misrouted, b"m/1", 2))  # would compact away m/1's
    await index.read(update_record(legacy, b"m", 3))  # an older trainer's key: accepted

    assert index.latest(MODEL, 1).update == v1  # 5 < 7: not older than the latest
    assert index.latest(MODEL, 2).update == v2
    assert (index.max_sequence(MODEL, 1), index.max_sequence(MODEL, 2)) == (7, 3)
    assert index.max_sequence(MODEL) == 7 and index.latest(MODEL).update == v1
    [letter] = index._policy.producer.sent  # type: ignore[attr-defined]
    assert dict(letter.headers)[REASON_HEADER] == (
        b"ModelUpdate for 'm' version 2 is keyed 'm/1', not 'm/2'"
    )


def test_a_restored_learner_opens_a_new_range_past_a_gap_not_after_a_plain_restart() -> None:
    def learn(learner: Learner, offsets) -> None:
        for o in offsets:
            learner.process(Example(f"e{o}", {"x": float(o % 3)}, o % 2 == 0), Position("t", 0, o))

    first = Learner(MODEL, "classifier", base_version=1, model=linear_model.LogisticRegression())
    learn(first, range(5))
    saved = first.progress()

    contiguous = Learner(MODEL, "classifier", base_version=1, model=None, progress=saved)
    contiguous.model = linear_model.LogisticRegression()
    learn(contiguous, [5, 6])
    after_gap = Learner(MODEL, "classifier", base_version=1, model=None, progress=saved)
    after_gap.model = linear_model.LogisticRegression()
    learn(after_gap, [9, 10])

    assert [(s.first, s.last) for s in contiguous.offsets()] == [(0, 6)]
    assert [(s.first, s.last) for s in after_gap.offsets()] == [(0, 4), (9, 10)]
    restored = Learner(
        MODEL, "classifier", base_version=1, model=None, progress=after_gap.progress()
    )
    assert restored.offsets() == after_gap.offsets() and restored.next_offset("t", 0) == 11

    first.pause()  # its route went; fed again later
    learn(first, [7])
    assert [(s.first, s.last) for s in first.offsets()] == [(0, 4), (7, 7)]


async def test_the_http_view_lists_every_learner_and_checkpoints_one_by_version() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.0, "primary"), (2, 1.0, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(3))
    app = build_web_app(lambda: pool, lambda: True, deadline_s=2.0)

    async with TestClient(TestServer(app)) as client:

        async def answer(method: str, path: str) -> tuple[int, dict]:
            reply = await client.request(method, path)
            return reply.status, await reply.json()

        _, listed = await answer("GET", "/v1/models")
        by_version = await answer("POST", f"/v1/models/{MODEL}/checkpoint?version=2")
        primary = await answer("POST", f"/v1/models/{MODEL}/checkpoint")
        missing = await answer("POST", f"/v1/models/{MODEL}/checkpoint?version=9")
        garbage = await answer("POST", f"/v1/models/{MODEL}/checkpoint?version=two")

    assert [
        (x["model"], x["version"], x["role"], x["examples_learned"]) for x in listed["learners"]
    ] == [
        (MODEL, 1, "primary", 3),
        (MODEL, 2, "canary", 3),
    ]
    assert by_version[0] == 201 and by_version[1]["parent_version"] == 2
    assert primary[0] == 201 and primary[1]["parent_version"] == 1
    assert missing[0] == 404 and "no learner for model 'm' version 9" in missing[1]["error"]
    assert garbage[0] == 400


async def test_the_clis_checkpoint_request_names_the_version() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(3))
    app = build_web_app(lambda: pool, lambda: True, deadline_s=2.0)

    async with TestServer(app) as server:
        url = str(server.make_url(""))
        created = await request_checkpoint(url, MODEL, version=2)
        with pytest.raises(ModelNotFound, match="version 9"):
            await request_checkpoint(url, MODEL, version=9)

    assert created["parent_version"] == 2 and created["example_count"] == 3
