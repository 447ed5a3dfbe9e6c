"""The learners on the real broker and registry: live sync, checkpoints, rebase, restart."""

from __future__ import annotations

import itertools
import time

import aiohttp
import pytest

from headwater.services.trainer.server import TrainerServer
from headwater.shared.bus.codec import decode_event, header
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.settings import KafkaSettings
from tests.fixtures import ProducedRecord, eventually, produce_records, read_records
from tests.integration.trainer.conftest import (
    CODEC,
    MODEL,
    TrainerFactory,
    answers,
    labeled,
    produce_examples,
    read_updates,
    reference,
    state_of,
    stream,
    update_with,
)
from tests.signed_updates import forgeries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_examples_become_model_updates_within_the_sync_interval(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    await start_trainer(sync_interval_ms=250)
    examples = stream(0, 40)
    await produce_examples(kafka_settings, examples)
    produced_at = time.time()

    update = await update_with(kafka_settings, model=MODEL, examples_learned=40)

    assert update.base_version == deployed
    assert update.published_at.ToNanoseconds() / 1e9 - produced_at < 3.0
    [span] = update.offsets
    assert span.topic == kafka_settings.topic("examples")
    assert span.last_offset - span.first_offset + 1 == 40
    assert answers(state_of(update)) == answers((await reference(client, 1, examples)).model)
    updates = [u for u in await read_updates(kafka_settings) if u.model == MODEL]
    sequences = [u.sequence for u in updates]
    assert sequences == sorted(set(sequences)) and sequences[0] >= 1
    published = [u.published_at.ToNanoseconds() / 1e9 for u in updates]
    assert all(b - a >= 0.24 for a, b in itertools.pairwise(published))


async def test_checkpoints_are_versions_with_their_lineage(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    trainer = await start_trainer(checkpoint_every_examples=30)
    await produce_examples(kafka_settings, stream(0, 30))

    async def version_2():
        versions = await client.list_versions(MODEL)
        return versions[1] if len(versions) > 1 else None

    v2 = await eventually(version_2, timeout_s=20, interval_s=0.2, what="checkpoint version 2")
    lineage = v2.lineage
    assert lineage.parent_version == deployed
    assert lineage.source == registry_pb2.VERSION_SOURCE_ONLINE_SNAPSHOT
    assert lineage.example_count == 30
    assert sum(r.last_offset - r.first_offset + 1 for r in lineage.offsets) == 30
    assert {r.topic for r in lineage.offsets} == {kafka_settings.topic("examples")}
    assert 0.0 <= lineage.metrics["accuracy"] <= 1.0
    assert v2.spec_json == (await client.get_version(MODEL, 1)).spec_json
    found = await client.get_artifact(MODEL, 2)
    snapshot = CODEC.decode(found.content, found.version.artifact.signature)
    assert answers(snapshot) == answers((await reference(client, 1, stream(0, 30))).model)

    # on demand: POST /v1/models/{name}/checkpoint
    await produce_examples(kafka_settings, stream(30, 35))
    await update_with(kafka_settings, model=MODEL, examples_learned=35)
    url = f"http://127.0.0.1:{trainer.http_port}/v1/models/{MODEL}/checkpoint"
    async with aiohttp.ClientSession() as session:
        async with session.post(url) as reply:
            assert reply.status == 201
            body = await reply.json()
        async with session.post(
            f"http://127.0.0.1:{trainer.http_port}/v1/models/nope/checkpoint"
        ) as reply:
            assert reply.status == 404
    assert body["version"] == 3 and body["parent_version"] == deployed
    assert body["example_count"] == 35
    v3 = await client.get_version(MODEL, 3)
    assert v3.lineage.example_count == 35


async def test_deploying_its_own_checkpoint_rebases_the_learner_without_losing_examples(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    await start_trainer(checkpoint_every_examples=20)
    await produce_examples(kafka_settings, stream(0, 20))
    await update_with(kafka_settings, model=MODEL, examples_learned=20)

    async def checkpoint():
        return len(await client.list_versions(MODEL)) == 2

    await eventually(checkpoint, timeout_s=20, what="checkpoint version 2")
    await produce_examples(kafka_settings, stream(20, 30))
    await update_with(kafka_settings, model=MODEL, base_version=1, examples_learned=30)

    await client.deploy(MODEL, 2)

    rebased = await update_with(kafka_settings, model=MODEL, base_version=2)
    assert rebased.examples_learned == 10  # what v2 lacks
    [span] = rebased.offsets
    assert span.last_offset - span.first_offset + 1 == 10
    assert answers(state_of(rebased)) == answers((await reference(client, 1, stream(0, 30))).model)


async def test_deploying_another_version_restarts_the_learner_from_it(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    from tests.integration.trainer.conftest import SPEC

    trainer = await start_trainer()
    await produce_examples(kafka_settings, stream(0, 10))
    await update_with(kafka_settings, model=MODEL, examples_learned=10)
    fresh = await client.create_version(MODEL, SPEC)
    await client.deploy(MODEL, fresh.version)
    # the deployment event reaches the trainer asynchronously: wait until it has noted (or
    # applied) it, so the next examples are learned from the new version
    assert trainer.pool is not None
    pool = trainer.pool

    async def noted() -> bool:
        active = pool.find(MODEL)
        applied = active is None or active.learner.base_version == fresh.version
        return pool.deployment_pending(MODEL) or applied

    await eventually(noted, timeout_s=15, what="deployment change noted by the trainer")
    trainer_updates = await read_updates(kafka_settings)
    await produce_examples(kafka_settings, stream(10, 15))

    update = await update_with(kafka_settings, model=MODEL, base_version=fresh.version)
    assert 1 <= update.examples_learned <= 5
    assert update.sequence > max(u.sequence for u in trainer_updates)


async def test_a_restarted_trainer_resumes_from_its_saved_state_and_offsets(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    first = await start_trainer()
    await produce_examples(kafka_settings, stream(0, 40))
    await update_with(kafka_settings, model=MODEL, examples_learned=40)
    await first.stop(grace_s=3)

    second = await start_trainer(app_id=first.settings.app_id)
    duplicates = [labeled(i) for i in range(35, 40)]  # same ids again, at new offsets
    await produce_examples(kafka_settings, stream(40, 60) + duplicates)

    update = await update_with(kafka_settings, model=MODEL, examples_learned=60)
    assert update.base_version == deployed
    [span] = update.offsets
    assert span.last_offset - span.first_offset + 1 == 65  # every record consumed once
    assert answers(state_of(update)) == answers((await reference(client, 1, stream(0, 60))).model)
    assert second.pool is not None
    assert second.pool.find(MODEL).learner.progress().duplicates == 5


async def test_a_restarted_trainer_dead_letters_forged_updates_and_resumes_from_the_genuine(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    first = await start_trainer()
    await produce_examples(kafka_settings, stream(0, 20))
    await update_with(kafka_settings, model=MODEL, examples_learned=20)
    await first.stop(grace_s=3)
    genuine = max(
        (u for u in await read_updates(kafka_settings) if u.model == MODEL),
        key=lambda u: u.sequence,
    )
    forged = forgeries(genuine, other_model="other")
    producer = EventProducer(kafka_settings, client_id="test-forger")
    await producer.start()
    try:
        for _, update in forged:
            await producer.send_and_wait(Topic.MODEL_UPDATES, MODEL, update)
    finally:
        await producer.stop(grace_s=2)

    second = await start_trainer(app_id=first.settings.app_id)
    letters = await read_records(kafka_settings, Topic.DEAD_LETTER, count=len(forged))
    assert [header(r.headers, REASON_HEADER).decode() for r in letters] == [
        f"ModelUpdate for {u.model!r} (sequence {u.sequence}) does not verify: artifact "
        "signature does not verify: wrong signing key or tampered content"
        for _, u in forged
    ]
    assert [r.value for r in letters] == [u.SerializeToString() for _, u in forged]
    assert second.pool is not None
    assert second.pool.index.max_sequence(MODEL) == genuine.sequence  # not the raised one
    assert second.pool.index.latest("other") is None

    await produce_examples(kafka_settings, stream(20, 25))
    update = await update_with(kafka_settings, model=MODEL, examples_learned=25)
    assert genuine.sequence < update.sequence < genuine.sequence + 1_000
    [span] = update.offsets
    assert span.last_offset - span.first_offset + 1 == 25  # the genuine offsets, then five more
    assert answers(state_of(update)) == answers((await reference(client, 1, stream(0, 25))).model)


async def test_examples_that_do_not_fit_the_model_are_dead_lettered(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings
) -> None:
    await start_trainer()
    wrong_label = labeled(0, example_id="bad-label")
    wrong_label.label.value = 0.5
    wrong_feature = labeled(1, example_id="bad-feature")
    wrong_feature.features["x1"].string_value = "high"
    await produce_examples(kafka_settings, [wrong_label, wrong_feature, *stream(2, 6)])

    update = await update_with(kafka_settings, model=MODEL, examples_learned=4)
    [span] = update.offsets
    assert span.last_offset - span.first_offset + 1 == 6
    dead = await read_records(kafka_settings, Topic.DEAD_LETTER, count=2)
    reasons = sorted(header(r.headers, REASON_HEADER).decode() for r in dead)
    assert "a classifier's label must be a bool, int or str" in reasons[0]
    assert "feature 'x1' must be a float" in reasons[1]


async def test_health_and_learner_view(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings
) -> None:
    trainer: TrainerServer = await start_trainer()
    await produce_examples(kafka_settings, stream(0, 5))
    await update_with(kafka_settings, model=MODEL, examples_learned=5)
    base = f"http://127.0.0.1:{trainer.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/health") as reply:
            assert reply.status == 200
        async with session.get(f"{base}/v1/models") as reply:
            [learner] = (await reply.json())["learners"]
        async with session.get(f"{base}/metrics") as reply:
            text = await reply.text()
    assert learner["model"] == MODEL and learner["examples_learned"] == 5
    assert f'headwater_trainer_examples_total{{model="{MODEL}",outcome="learned"}}' in text


async def test_labels_sent_as_json_feedback_are_joined_and_learned_exactly_once(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    from headwater.shared.bus.codec import encode_event, encode_event_json, json_header

    await start_trainer()
    records: list[ProducedRecord] = []
    for i, source in enumerate(stream(0, 12)):
        prediction = events_pb2.PredictionEvent(
            prediction_id=f"p-{i}", model=MODEL, version=deployed
        )
        for name, value in source.features.items():
            prediction.features[name].CopyFrom(value)
        feedback = events_pb2.FeedbackEvent(prediction_id=f"p-{i}", label=source.label)
        key = prediction.prediction_id
        records.append((Topic.PREDICTIONS, key, encode_event(prediction), []))
        # an at-least-once producer may send a label twice
        records += [(Topic.FEEDBACK, key, encode_event_json(feedback), [json_header()])] * 2
    await produce_records(kafka_settings, records, one_at_a_time=True)

    update = await update_with(kafka_settings, model=MODEL, examples_learned=12)
    examples = await read_records(kafka_settings, Topic.EXAMPLES, count=12)
    assert len(examples) == 12
    in_log_order = [
        decode_event(events_pb2.LabeledExample, r.value)
        for r in sorted(examples, key=lambda r: (r.partition, r.offset))
    ]
    assert sorted(e.example_id for e in in_log_order) == sorted(f"p-{i}" for i in range(12))
    expected = await reference(client, deployed, in_log_order)
    assert answers(state_of(update)) == answers(expected.model)
