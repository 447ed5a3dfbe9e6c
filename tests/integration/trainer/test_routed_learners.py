"""A learner per routed version, real broker and registry: keys, exactness, retiring, restart."""

from __future__ import annotations

import time

import aiohttp
import pytest

from headwater.services.trainer.server import TrainerServer
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually
from tests.integration.trainer.conftest import (
    MODEL,
    TrainerFactory,
    answers,
    labeled,
    produce_examples,
    read_keyed_updates,
    reference,
    state_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: A second version that learns differently from version 1 (another L2 penalty).
CANARY_SPEC = (
    '{"pipeline": [{"component": "preprocessing.StandardScaler"},'
    ' {"component": "linear_model.LogisticRegression", "params": {"l2": 0.05}}]}'
)


async def latest_update(
    kafka: KafkaSettings, version: int, examples_learned: int
) -> tuple[str, events_pb2.ModelUpdate]:
    """Wait for an update of the learner on ``version`` that has learned that many examples."""

    async def probe():
        for key, update in reversed(await read_keyed_updates(kafka)):
            if update.base_version == version and update.examples_learned == examples_learned:
                return key, update
        return None

    what = f"update of v{version} with {examples_learned} examples"
    return await eventually(probe, timeout_s=30, interval_s=0.2, what=what)


async def listed(trainer: TrainerServer) -> list[dict]:
    """The trainer's ``/v1/models``."""
    url = f"http://127.0.0.1:{trainer.http_port}/v1/models"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return (await reply.json())["learners"]


def shadow_copy(i: int) -> events_pb2.LabeledExample:
    """A shadow's scoring copy of example i: no learner learns it."""
    copy = labeled(i, example_id=f"ex-{i}~v2")
    copy.route_role = registry_pb2.ROUTE_ROLE_SHADOW
    copy.answered_prediction_id = f"ex-{i}"
    return copy


async def primary_and_canary(client: RegistryClient, deployed: int) -> int:
    canary = await client.create_version(MODEL, CANARY_SPEC)
    await client.set_deployment(
        MODEL, [(deployed, 0.9, "primary"), (canary.version, 0.1, "canary")]
    )
    return canary.version


async def test_primary_and_canary_each_learn_every_example_exactly_like_river(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    canary = await primary_and_canary(client, deployed)
    trainer = await start_trainer()
    learned = [labeled(i) for i in range(30)]
    mixed = [e for i, e in enumerate(learned) for e in ([e, shadow_copy(i)] if i % 5 == 0 else [e])]
    await produce_examples(kafka_settings, mixed)

    for version in (deployed, canary):
        key, update = await latest_update(kafka_settings, version, 30)
        assert key == f"{MODEL}/{version}" and update.model == MODEL
        [span] = update.offsets
        assert span.last_offset - span.first_offset + 1 == len(mixed)
        expected = await reference(client, version, learned)
        assert answers(state_of(update)) == answers(expected.model)
    assert answers((await reference(client, deployed, learned)).model) != answers(
        (await reference(client, canary, learned)).model
    )
    assert {key for key, _ in await read_keyed_updates(kafka_settings)} == {
        f"{MODEL}/{deployed}",
        f"{MODEL}/{canary}",
    }
    assert [(x["version"], x["role"], x["examples_learned"]) for x in await listed(trainer)] == [
        (deployed, "primary", 30),
        (canary, "canary", 30),
    ]


async def test_removing_the_canary_route_stops_its_learner_after_a_final_save(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    canary = await primary_and_canary(client, deployed)
    trainer = await start_trainer(sync_interval_ms=6_000)
    await produce_examples(kafka_settings, [labeled(i) for i in range(10)])
    await latest_update(kafka_settings, canary, 10)  # the first save goes out at once
    await produce_examples(kafka_settings, [labeled(i) for i in range(10, 20)])

    async def both_learned() -> bool:
        return [x["examples_learned"] for x in await listed(trainer)] == [20, 20]

    await eventually(both_learned, timeout_s=20, what="20 learned, not saved yet")
    await client.set_deployment(MODEL, [(deployed, 1.0, "primary")])
    removed_at = time.monotonic()
    pool = trainer.pool
    assert pool is not None

    async def noted() -> bool:
        return pool.deployment_pending(MODEL) or pool.find(MODEL, canary) is None

    await eventually(noted, timeout_s=15, what="the route change noted by the trainer")
    # the loop applies it before its next batch: this example wakes it (the poll waits up
    # to sync_interval_ms otherwise); the primary learns it, the retiring canary does not
    await produce_examples(kafka_settings, [labeled(20)])

    key, final = await latest_update(kafka_settings, canary, 20)
    assert time.monotonic() - removed_at < 5.0  # its last save, not the 6 s cadence
    assert key == f"{MODEL}/{canary}"
    expected = await reference(client, canary, [labeled(i) for i in range(20)])
    assert answers(state_of(final)) == answers(expected.model)

    async def only_the_primary() -> bool:
        return [x["version"] for x in await listed(trainer)] == [deployed]

    await eventually(only_the_primary, timeout_s=10, what="the canary's learner gone")
    await produce_examples(kafka_settings, [labeled(i) for i in range(21, 25)])
    await latest_update(kafka_settings, deployed, 25)
    canary_updates = [
        u for _, u in await read_keyed_updates(kafka_settings) if u.base_version == canary
    ]
    assert max(u.examples_learned for u in canary_updates) == 20  # it learns nothing more


async def test_a_restarted_trainer_restores_both_learners(
    deployed: int, start_trainer: TrainerFactory, kafka_settings: KafkaSettings, client
) -> None:
    canary = await primary_and_canary(client, deployed)
    first = await start_trainer()
    await produce_examples(kafka_settings, [labeled(i) for i in range(25)])
    for version in (deployed, canary):
        await latest_update(kafka_settings, version, 25)
    await first.stop(grace_s=3)

    second = await start_trainer(app_id=first.settings.app_id)
    await produce_examples(kafka_settings, [labeled(i) for i in range(25, 40)])

    everything = [labeled(i) for i in range(40)]
    for version in (deployed, canary):
        _, update = await latest_update(kafka_settings, version, 40)
        [span] = update.offsets  # every record consumed once, in one range
        assert span.last_offset - span.first_offset + 1 == 40
        expected = await reference(client, version, everything)
        assert answers(state_of(update)) == answers(expected.model)
    assert second.pool is not None
    assert {r.learner_id.version for r in second.pool.learners()} == {deployed, canary}
