"""A learner per routed version: every example learned by each, routes that come and go."""

from __future__ import annotations

from headwater.services.trainer import metrics
from headwater.services.trainer.learn.pool import ExampleOutcome
from headwater.services.trainer.learn.routes import LearnerId
from headwater.shared.pb import events_pb2, registry_pb2
from tests.unit.trainer.learn.conftest import TOPIC, Rejects, make_pool, new_index
from tests.unit.trainer.learn.routed_fakes import (
    MODEL,
    RoutedRegistry,
    answers,
    example,
    feed_examples,
    reference,
    save_all,
)

LEARNED = ExampleOutcome.LEARNED
SHADOW = registry_pb2.ROUTE_ROLE_SHADOW


async def test_two_routed_versions_each_learn_every_example_like_river_in_process() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.9, "primary"), (2, 0.1, "canary"))
    pool = make_pool(registry)

    assert await feed_examples(pool, range(20)) == [LEARNED] * 20

    primary, canary = pool.find(MODEL), pool.find(MODEL, 2)
    assert primary is not None and canary is not None
    assert primary is pool.find(MODEL, 1)  # no version: the primary route's learner
    assert [(r.learner_id, r.role) for r in pool.learners()] == [
        (LearnerId(MODEL, 1), "primary"),
        (LearnerId(MODEL, 2), "canary"),
    ]
    for active, version in ((primary, 1), (canary, 2)):
        assert active.learner.examples_learned == 20
        assert active.learner.base_version == version
        expected = await reference(registry, version, range(20))
        assert answers(active.learner.model) == answers(expected)
    assert answers(primary.learner.model) != answers(canary.learner.model)  # two states


async def test_three_routed_versions_with_a_zero_weight_primary_all_learn() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.0, "primary"), (2, 1.0, "canary"), (3, 0.0, "challenger"))
    pool = make_pool(registry)

    processed = [await pool.process(example(o), Rejects()) for o in range(12)]

    assert {p.learners for p in processed} == {((1, LEARNED), (2, LEARNED), (3, LEARNED))}
    for version in (1, 2, 3):
        active = pool.find(MODEL, version)
        assert active is not None and active.learner.examples_learned == 12
        assert answers(active.learner.model) == answers(
            await reference(registry, version, range(12))
        )
    assert [r.role for r in pool.learners()] == ["primary", "canary", "challenger"]
    assert sorted(pool.due_updates(force=True)) == [LearnerId(MODEL, v) for v in (1, 2, 3)]


async def test_shadow_copies_are_learned_by_no_learner_and_not_dead_lettered() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 1.0, "primary"), (2, 0.5, "shadow"))
    pool = make_pool(registry)
    rejects = Rejects()

    outcomes = []
    for offset in range(10):  # each answered example, then its shadow's scoring copy
        outcomes.append((await pool.process(example(2 * offset), rejects)).outcome)
        outcomes.append((await pool.process(example(2 * offset + 1, role=SHADOW), rejects)).outcome)

    assert outcomes == [LEARNED, ExampleOutcome.SHADOW_COPY] * 10
    assert rejects == []
    for version in (1, 2):  # the shadow's learner learns the answered examples too
        active = pool.find(MODEL, version)
        assert active is not None and active.learner.examples_learned == 10
        expected = await reference(registry, version, range(0, 20, 2))
        assert answers(active.learner.model) == answers(expected)
    sample = metrics.EXAMPLES.labels(model=MODEL, outcome="shadow_copy")
    assert sample._value.get() >= 10


async def test_a_route_that_goes_retires_its_learner_after_a_final_save() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.9, "primary"), (2, 0.1, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(5))
    await save_all(pool)
    await feed_examples(pool, range(5, 8))  # unsaved: the canary's final save must cover them
    assert pool.commit_offsets({(TOPIC, 0): 8}) == {(TOPIC, 0): 5}

    pool.on_registry_event(registry.deploy((1, 1.0, "primary")))  # rolled back
    pool.apply_deployments()

    assert pool.find(MODEL, 2) is None
    assert [r.learner_id for r in pool.learners()] == [LearnerId(MODEL, 1)]
    assert await feed_examples(pool, [8]) == [LEARNED]  # the retiring learner learns nothing more
    assert pool.due_updates() == [LearnerId(MODEL, 2)]  # its last update, at once
    assert pool.commit_offsets({(TOPIC, 0): 9}) == {(TOPIC, 0): 5}
    final = await pool.build_update(LearnerId(MODEL, 2))
    assert (final.base_version, final.examples_learned) == (2, 8)
    pool.saved(LearnerId(MODEL, 2), final)

    assert pool.due_updates(force=True) == [LearnerId(MODEL, 1)]  # the retired one is gone
    saved = await save_all(pool)
    assert saved[LearnerId(MODEL, 1)].examples_learned == 9
    assert pool.commit_offsets({(TOPIC, 0): 9}) == {(TOPIC, 0): 9}
    assert pool.index.latest(MODEL, 2).update.sequence == final.sequence


async def test_a_retired_learners_gauges_go_with_it() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(6))
    await save_all(pool)
    gauge = metrics.LEARNER_EXAMPLES
    assert gauge.labels(model=MODEL, version="2")._value.get() == 6

    pool.on_registry_event(registry.deploy((1, 1.0, "primary")))
    pool.apply_deployments()

    samples = [s for m in gauge.collect() for s in m.samples]  # process-wide: other tests' too
    exported = {s.labels["version"] for s in samples if s.labels["model"] == MODEL}
    assert "2" not in exported and "1" in exported


async def test_a_promoted_canary_keeps_learning_and_the_old_primary_retires() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(10))
    canary = pool.find(MODEL, 2)

    pool.on_registry_event(registry.deploy((2, 1.0, "primary")))  # promoted
    pool.apply_deployments()

    assert pool.find(MODEL) is canary  # the same learner, now the primary's
    assert [(r.learner_id, r.role) for r in pool.learners()] == [(LearnerId(MODEL, 2), "primary")]
    assert pool.due_updates() == [LearnerId(MODEL, 2), LearnerId(MODEL, 1)]  # 1: its last
    assert await feed_examples(pool, range(10, 15)) == [LEARNED] * 5
    assert canary is not None and canary.learner.examples_learned == 15
    assert answers(canary.learner.model) == answers(await reference(registry, 2, range(15)))
    assert registry.calls.count("get_artifact 2") == 1  # never loaded again


async def test_blue_green_keeps_both_learners_switching_their_roles() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 1.0, "primary"), (2, 0.0, "challenger"))
    pool = make_pool(registry)
    await feed_examples(pool, range(4))
    before = {v: pool.find(MODEL, v) for v in (1, 2)}

    pool.on_registry_event(registry.deploy((2, 1.0, "primary"), (1, 0.0, "challenger")))
    pool.apply_deployments()
    await feed_examples(pool, range(4, 8))

    assert [(r.learner_id.version, r.role) for r in pool.learners()] == [
        (1, "challenger"),
        (2, "primary"),
    ]
    assert all(pool.find(MODEL, v) is before[v] for v in (1, 2))
    assert [pool.find(MODEL, v).learner.examples_learned for v in (1, 2)] == [8, 8]


async def test_a_new_route_gets_its_learner_at_its_first_example() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 1.0, "primary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(5))

    pool.on_registry_event(registry.deploy((1, 0.95, "primary"), (3, 0.05, "canary")))
    pool.apply_deployments()
    assert pool.find(MODEL, 3) is None
    await feed_examples(pool, range(5, 9))

    canary = pool.find(MODEL, 3)
    assert canary is not None and canary.learner.examples_learned == 4
    assert answers(canary.learner.model) == answers(await reference(registry, 3, range(5, 9)))
    assert pool.find(MODEL).learner.examples_learned == 9
    assert registry.calls.count("get_deployment") == 1  # the event's routes were used


async def test_a_checkpoint_next_to_its_maker_is_a_learner_of_its_own() -> None:
    registry = RoutedRegistry(versions=1)
    registry.deploy((1, 1.0, "primary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(6))
    checkpoint = await pool.start_checkpoint(MODEL)
    assert checkpoint is not None and checkpoint.version == 2
    await feed_examples(pool, range(6, 8))

    pool.on_registry_event(registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary")))
    pool.apply_deployments()
    await feed_examples(pool, [8])

    maker, fresh = pool.find(MODEL, 1), pool.find(MODEL, 2)  # the maker still learns for 1
    assert maker is not None and maker.learner.examples_learned == 9
    assert fresh is not None and fresh.learner.examples_learned == 1
    assert answers(fresh.learner.model) == answers(await reference(registry, 2, [8]))

    pool.on_registry_event(registry.deploy((2, 1.0, "primary")))
    pool.apply_deployments()
    assert pool.find(MODEL) is fresh  # kept: it already learns for version 2
    assert pool.due_updates() == [LearnerId(MODEL, 2), LearnerId(MODEL, 1)]  # 1 retires


async def test_a_canary_route_moved_onto_its_learners_checkpoint_rebases_that_learner() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(5))
    checkpoint = await pool.start_checkpoint(MODEL, 2)
    assert checkpoint is not None and checkpoint.version == 4
    assert checkpoint.lineage.parent_version == 2
    assert checkpoint.tags["headwater.checkpoint-id"] == "m/2/5"
    await feed_examples(pool, range(5, 8))
    canary = pool.find(MODEL, 2)

    pool.on_registry_event(registry.deploy((1, 0.5, "primary"), (4, 0.5, "canary")))
    pool.apply_deployments()

    assert pool.find(MODEL, 2) is None and pool.find(MODEL, 4) is canary
    assert canary is not None and canary.learner.base_version == 4
    assert canary.learner.examples_learned == 3  # what version 4 lacks
    assert answers(canary.learner.model) == answers(await reference(registry, 2, range(8)))
    assert LearnerId(MODEL, 4) in pool.due_updates()  # published under the new base at once
    assert registry.calls.count("get_artifact 4") == 0


async def test_a_route_back_before_the_final_save_revives_its_learner() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(4))
    canary = pool.find(MODEL, 2)

    pool.on_registry_event(registry.deploy((1, 1.0, "primary")))
    pool.apply_deployments()
    await feed_examples(pool, range(4, 6))  # learned by the primary only
    pool.on_registry_event(registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary")))
    pool.apply_deployments()
    await feed_examples(pool, range(6, 8))

    assert pool.find(MODEL, 2) is canary and canary is not None
    assert canary.learner.examples_learned == 6
    assert [(s.first, s.last) for s in canary.learner.offsets()] == [(0, 3), (6, 7)]
    assert pool.due_updates() == [LearnerId(MODEL, 1), LearnerId(MODEL, 2)]


async def test_a_route_back_after_its_final_save_restores_the_learner_past_the_gap() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(4))
    pool.on_registry_event(registry.deploy((1, 1.0, "primary")))
    pool.apply_deployments()
    await save_all(pool)  # the canary's last update, and the primary's
    await feed_examples(pool, range(4, 6))

    pool.on_registry_event(registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary")))
    pool.apply_deployments()
    await feed_examples(pool, range(6, 8))

    back = pool.find(MODEL, 2)
    assert back is not None and back.learner.examples_learned == 6
    assert [(s.first, s.last) for s in back.learner.offsets()] == [(0, 3), (6, 7)]
    expected = await reference(registry, 2, [0, 1, 2, 3, 6, 7])
    assert answers(back.learner.model) == answers(expected)
    assert registry.calls.count("get_artifact 2") == 2  # loaded again, then restored


async def test_commit_offsets_wait_for_every_learner_of_every_model() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(5))
    await feed_examples(
        pool, range(3), model="other", partition=1
    )  # not deployed: dead-lettered, nothing unsaved
    update = await pool.build_update(LearnerId(MODEL, 1))
    pool.saved(LearnerId(MODEL, 1), update)  # the primary saved, the canary not yet

    assert pool.commit_offsets({(TOPIC, 0): 5, (TOPIC, 1): 3}) == {(TOPIC, 0): 0, (TOPIC, 1): 3}
    await feed_examples(pool, range(5, 7))
    update = await pool.build_update(LearnerId(MODEL, 2))
    pool.saved(LearnerId(MODEL, 2), update)
    assert pool.commit_offsets({(TOPIC, 0): 7}) == {(TOPIC, 0): 5}  # the primary's 5, 6
    await save_all(pool)
    assert pool.commit_offsets({(TOPIC, 0): 7}) == {(TOPIC, 0): 7}


async def test_a_restarted_pool_restores_each_learner_from_its_own_update() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    index = new_index()
    first = make_pool(registry, index)
    await feed_examples(first, range(8))
    saved = await save_all(first)
    assert {learner.version: u.sequence for learner, u in saved.items()} == {1: 1, 2: 2}

    second = make_pool(registry, index)
    assert await feed_examples(second, range(8)) == [ExampleOutcome.ALREADY_CONSUMED] * 8
    assert await feed_examples(second, range(8, 10)) == [LEARNED] * 2
    for version in (1, 2):
        active = second.find(MODEL, version)
        assert active is not None and active.learner.examples_learned == 10
        expected = await reference(registry, version, range(10))
        assert answers(active.learner.model) == answers(expected)
    again = await save_all(second)
    assert all(u.sequence > 2 for u in again.values())  # above every sequence of the model


async def test_one_learner_refusing_an_example_dead_letters_it_once_and_the_others_learn() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, [0])
    canary = pool.find(MODEL, 2)
    assert canary is not None

    class Refusing:
        def __init__(self, model) -> None:
            self.model = model

        def predict_one(self, x):
            return self.model.predict_one(x)

        def learn_one(self, x, y):
            raise ValueError("no")

    canary.learner.model = Refusing(canary.learner.model)
    rejects = Rejects()
    processed = await pool.process(example(1), rejects)

    assert processed.outcome is ExampleOutcome.DEAD_LETTER
    assert processed.learners == ((1, LEARNED), (2, ExampleOutcome.DEAD_LETTER))
    assert rejects == [(1, "version 2: model cannot learn: ValueError('no')")]
    assert canary.learner.next_offset(TOPIC, 0) == 2  # moved past it
    assert pool.find(MODEL, 1).learner.examples_learned == 2


async def test_a_version_that_cannot_be_learned_leaves_the_others_learning() -> None:
    registry = RoutedRegistry()
    registry.broken.add(2)
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    rejects = Rejects()

    assert await feed_examples(pool, range(3), rejects) == [LEARNED] * 3
    assert rejects == [] and pool.find(MODEL, 2) is None
    assert registry.calls.count("get_artifact 2") == 1  # remembered for a while

    registry.deploy((2, 1.0, "primary"))
    pool.on_registry_event(registry.deploy((2, 1.0, "primary")))
    pool.apply_deployments()
    assert await feed_examples(pool, [3], rejects) == [ExampleOutcome.NOT_DEPLOYED]
    [(_, reason)] = rejects
    assert reason.startswith("version 2 of model 'm' cannot be learned: ")


async def test_an_older_deployment_event_is_ignored() -> None:
    registry = RoutedRegistry()
    old = registry.deploy((1, 1.0, "primary"))
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(2))

    pool.on_registry_event(old)  # delivered late: revision 1 < 2
    pool.apply_deployments()

    assert pool.find(MODEL, 2) is not None and pool.due_updates(force=True) == [
        LearnerId(MODEL, 1),
        LearnerId(MODEL, 2),
    ]


async def test_a_deployment_without_routes_retires_every_learner() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(2))

    pool.on_registry_event(
        events_pb2.RegistryEvent(
            model=MODEL, kind=events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED
        )
    )
    pool.apply_deployments()

    assert pool.learners() == [] and pool.find(MODEL) is None
    assert pool.due_updates() == [LearnerId(MODEL, 1), LearnerId(MODEL, 2)]  # their last saves
    registry.deployment.ClearField("routes")
    rejects = Rejects()
    assert await feed_examples(pool, [2], rejects) == [ExampleOutcome.NOT_DEPLOYED]


async def test_revoked_partitions_drop_every_learner_of_their_models() -> None:
    registry = RoutedRegistry()
    registry.deploy((1, 0.5, "primary"), (2, 0.5, "canary"))
    pool = make_pool(registry)
    await feed_examples(pool, range(3))

    assert pool.drop({(TOPIC, 1)}) == []
    assert pool.drop({(TOPIC, 0)}) == [LearnerId(MODEL, 1), LearnerId(MODEL, 2)]
    assert pool.learners() == [] and pool.commit_offsets({(TOPIC, 0): 3}) == {(TOPIC, 0): 3}
