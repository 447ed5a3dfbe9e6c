"""The learner pool on an in-memory registry: learning, dead-lettering, following deployments."""

from __future__ import annotations

import pytest

from headwater.services.trainer.learn.loading import NOT_DEPLOYED_CACHE_SIZE
from headwater.services.trainer.learn.pool import ExampleOutcome
from headwater.services.trainer.learn.routes import LearnerId
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import Unavailable
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import route
from headwater.shared.specs import build_model
from tests.unit.trainer.learn.conftest import (
    SPEC,
    TOPIC,
    FakeRegistry,
    Rejects,
    feed,
    make_pool,
    record,
)


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


async def test_the_models_remembered_as_not_deployed_are_bounded() -> None:
    registry = FakeRegistry()
    pool = make_pool(registry)
    rejects = Rejects()
    for i in range(NOT_DEPLOYED_CACHE_SIZE + 50):
        example = events_pb2.LabeledExample(example_id=f"e{i}", model=f"junk-{i}")
        await pool.process(ConsumedRecord(TOPIC, 0, i, None, encode_event(example)), rejects)
    assert len(rejects) == NOT_DEPLOYED_CACHE_SIZE + 50
    assert len(pool._not_deployed) == NOT_DEPLOYED_CACHE_SIZE  # bounded


async def test_checkpoint_then_its_deployment_rebases_and_another_restarts() -> None:
    registry = FakeRegistry()
    registry.deployed = 1
    pool = make_pool(registry, checkpoint_every_examples=5)
    await feed(pool, range(6))
    assert pool.due_checkpoints() == [LearnerId("m", 1)]
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
    assert pool.due_updates() == [LearnerId("m", 2)]  # published under the new base at once

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
