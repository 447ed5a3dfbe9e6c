"""Every routed version loaded, unrouted ones kept for a grace, live updates per version."""

from __future__ import annotations

from river import linear_model

from headwater.services.gateway.live_updates import LiveUpdater, UpdatePlan
from headwater.services.gateway.loader import ModelLoader
from headwater.services.gateway.model_cache import ModelCache
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.pb import registry_pb2
from tests.signed_updates import signed_update
from tests.unit.gateway.test_model_cache import X, model_proto

R = registry_pb2
CODEC = ArtifactCodec("unit-test-key")


def trained(positive: bool) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression()
    for _ in range(30):
        model.learn_one(X, positive)
    return model


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeRegistry:
    """Serves one model whose versions are trained models; counts artifact fetches."""

    def __init__(self) -> None:
        self.fetched: list[int] = []

    async def get_model(self, name: str) -> R.Model:
        return model_proto(name)

    async def get_artifact(self, model: str, version: int) -> R.GetArtifactResponse:
        self.fetched.append(version)
        artifact = CODEC.encode(trained(version % 2 == 1))
        return R.GetArtifactResponse(
            version=R.ModelVersion(
                model=model,
                version=version,
                artifact=R.Artifact(sha256=artifact.sha256, signature=artifact.signature),
            ),
            content=artifact.content,
        )


def routes(revision: int, *routes: tuple[int, float, int]) -> R.Deployment:
    return R.Deployment(
        model="m",
        revision=revision,
        mode=R.SERVING_MODE_LIVE,
        routes=[R.Route(version=v, weight=w, role=role) for v, w, role in routes],
    )


PRIMARY, CANARY, SHADOW, CHALLENGER = (
    R.ROUTE_ROLE_PRIMARY,
    R.ROUTE_ROLE_CANARY,
    R.ROUTE_ROLE_SHADOW,
    R.ROUTE_ROLE_CHALLENGER,
)


def harness(grace_s: float = 30.0) -> tuple[ModelCache, ModelLoader, FakeRegistry, Clock]:
    clock = Clock()
    cache = ModelCache(unload_grace_s=grace_s, clock=clock)
    registry = FakeRegistry()
    loader = ModelLoader(registry, CODEC, cache, LiveUpdater(cache, CODEC))  # type: ignore[arg-type]
    return cache, loader, registry, clock


async def test_every_routed_version_is_loaded_whatever_its_role() -> None:
    cache, loader, registry, _ = harness()
    deployment = routes(
        1, (1, 0.9, PRIMARY), (2, 0.1, CANARY), (3, 0.5, SHADOW), (4, 0.0, CHALLENGER)
    )
    assert await loader.apply(deployment)
    assert sorted(registry.fetched) == [1, 2, 3, 4]
    assert sorted(cache.get("m").versions) == [1, 2, 3, 4]
    assert all(cache.ready("m", v) for v in (1, 2, 3, 4))


async def test_a_version_no_longer_routed_stays_loaded_for_the_grace_then_is_unloaded() -> None:
    cache, loader, registry, clock = harness(grace_s=30)
    await loader.apply(routes(1, (1, 1.0, PRIMARY), (2, 0.0, CHALLENGER)))  # blue/green pending
    blue = cache.get("m").versions[1]
    await loader.apply(routes(2, (2, 1.0, PRIMARY)))  # switched, the baseline dropped
    assert list(cache.get("m").versions) == [2]
    assert cache.loaded("m") == (2, 1)
    clock.now += 29
    assert cache.sweep() == []
    await loader.apply(routes(3, (1, 1.0, PRIMARY)))  # rolled back within the grace
    assert cache.get("m").versions[1] is blue  # the same object: no fetch, no unpickling
    assert registry.fetched == [1, 2]
    assert cache.loaded("m") == (1, 2)
    clock.now += 30
    assert cache.sweep() == [("m", 2)]
    assert cache.loaded("m") == (1,)
    await loader.apply(routes(4, (2, 1.0, PRIMARY)))  # after the grace: fetched again
    assert registry.fetched == [1, 2, 2]


async def test_an_undeployed_model_keeps_its_versions_for_the_grace() -> None:
    cache, loader, _, clock = harness(grace_s=5)
    await loader.apply(routes(1, (1, 1.0, PRIMARY)))
    await loader.apply(R.Deployment(model="m", revision=2))
    assert cache.find("m") is None and cache.loaded("m") == (1,)
    clock.now += 5
    assert cache.sweep() == [("m", 1)]


async def test_a_zero_grace_unloads_at_the_switch() -> None:
    cache, loader, _, _ = harness(grace_s=0)
    await loader.apply(routes(1, (1, 1.0, PRIMARY)))
    await loader.apply(routes(2, (2, 1.0, PRIMARY)))
    assert cache.loaded("m") == (2,)


async def test_each_routed_version_swaps_in_its_own_learners_updates() -> None:
    cache, loader, _, _ = harness()
    await loader.apply(routes(1, (1, 0.5, PRIMARY), (2, 0.5, CANARY), (3, 0.0, CHALLENGER)))
    updater = loader.updater
    for version, sequence, positive in ((1, 7, False), (2, 3, True), (3, 12, False)):
        update = signed_update(CODEC, trained(positive), "m", version, sequence)
        assert await updater.offer(update) is UpdatePlan.APPLY
    versions = cache.get("m").versions
    assert [versions[v].live_sequence for v in (1, 2, 3)] == [7, 3, 12]
    assert [versions[v].estimator.predict_one(X) for v in (1, 2, 3)] == [False, True, False]
    # a learner's sequence is its own: version 2's 4 is newer than its 3, whatever version 1 is at
    assert await updater.offer(signed_update(CODEC, trained(False), "m", 2, 4)) is UpdatePlan.APPLY
    stale = signed_update(CODEC, trained(True), "m", 1, 6)
    assert await updater.offer(stale) is UpdatePlan.STALE


async def test_updates_of_two_new_versions_wait_for_their_deployment_together() -> None:
    cache, loader, _, _ = harness()
    await loader.apply(routes(1, (1, 1.0, PRIMARY)))
    updater = loader.updater
    for version, sequence in ((2, 50), (3, 2)):  # learners of a canary and a shadow on their way
        update = signed_update(CODEC, trained(False), "m", version, sequence)
        assert await updater.offer(update) is UpdatePlan.NOT_DEPLOYED
    await loader.apply(routes(2, (1, 0.9, PRIMARY), (2, 0.1, CANARY), (3, 1.0, SHADOW)))
    versions = cache.get("m").versions
    assert [versions[v].live_sequence for v in (1, 2, 3)] == [0, 50, 2]


async def test_a_rollback_in_the_grace_keeps_the_live_state_of_the_returning_version() -> None:
    cache, loader, registry, _ = harness()
    await loader.apply(routes(1, (1, 0.5, PRIMARY), (2, 0.5, CANARY)))
    await loader.updater.offer(signed_update(CODEC, trained(False), "m", 2, 9))
    await loader.apply(routes(2, (1, 1.0, PRIMARY)))  # canary rolled back
    await loader.apply(routes(3, (1, 0.5, PRIMARY), (2, 0.5, CANARY)))  # and started again
    assert cache.get("m").versions[2].live_sequence == 9
    assert sorted(registry.fetched) == [1, 2]
