"""The model cache: deployments installed by revision, live updates swapped in safely."""

from __future__ import annotations

import threading

import pytest
from river import linear_model

from headwater.services.gateway.model_cache import (
    LiveUpdater,
    ModelCache,
    ModelEntry,
    ServedVersion,
    UpdatePlan,
)
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import InvalidInput, ModelNotFound, ModelNotReady
from headwater.shared.pb import events_pb2, registry_pb2

R = registry_pb2
CODEC = ArtifactCodec("unit-test-key")
X = {"x": 1.0}


def model_proto(name: str = "m") -> R.Model:
    return R.Model(
        name=name,
        task=R.TASK_BINARY,
        features=[R.Feature(name="x", type=R.FEATURE_TYPE_FLOAT, required=True)],
    )


def deployment(
    revision: int, *versions: int, mode: int = R.SERVING_MODE_LIVE, name: str = "m"
) -> R.Deployment:
    routes = [R.Route(version=v, weight=1.0, role=R.ROUTE_ROLE_PRIMARY) for v in versions[:1]]
    routes += [R.Route(version=v, weight=0.0, role=R.ROUTE_ROLE_SHADOW) for v in versions[1:]]
    return R.Deployment(model=name, routes=routes, mode=mode, revision=revision)


def trained(positive: bool, n: int = 30) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression()
    for _ in range(n):
        model.learn_one(X, positive)
    return model


def entry(revision: int, *versions: int, mode: int = R.SERVING_MODE_LIVE) -> ModelEntry:
    loaded = {v: ServedVersion(v, linear_model.LogisticRegression()) for v in versions}
    return ModelEntry.build(model_proto(), deployment(revision, *versions, mode=mode), loaded)


def update(
    sequence: int, base_version: int = 1, positive: bool = True, codec: ArtifactCodec = CODEC
) -> events_pb2.ModelUpdate:
    artifact = codec.encode(trained(positive))
    return events_pb2.ModelUpdate(
        model="m",
        base_version=base_version,
        sequence=sequence,
        state=artifact.content,
        sha256=artifact.sha256,
        signature=artifact.signature,
    )


def served(cache: ModelCache, version: int = 1) -> ServedVersion:
    return cache.get("m").versions[version]


def test_unknown_model_is_not_found_and_undeployed_is_not_ready() -> None:
    cache = ModelCache()
    with pytest.raises(ModelNotFound, match="model 'm' not found"):
        cache.get("m")
    cache.know("m")
    with pytest.raises(ModelNotReady, match="model 'm' is not deployed"):
        cache.get("m")


def test_install_keeps_the_newest_revision() -> None:
    cache = ModelCache()
    assert cache.install(entry(2, 2))
    assert not cache.install(entry(1, 1))
    assert list(cache.get("m").versions) == [2]
    assert cache.install(entry(3, 3))
    assert cache.revision("m") == 3
    assert not cache.remove("m", 2)
    assert cache.remove("m", 4)
    with pytest.raises(ModelNotReady):
        cache.get("m")


def test_routed_versions_must_be_loaded() -> None:
    with pytest.raises(ValueError, match=r"versions \[2\]"):
        ModelEntry.build(model_proto(), deployment(1, 1, 2), {1: ServedVersion(1, None)})


async def test_live_update_is_swapped_in_and_changes_the_answer() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    before = served(cache).estimator.predict_proba_one(X)[True]
    updater = LiveUpdater(cache, CODEC)
    assert await updater.offer(update(5, positive=True)) is UpdatePlan.APPLY
    after = served(cache)
    assert after.live_sequence == 5
    assert after.estimator.predict_proba_one(X)[True] > before > 0
    assert await updater.offer(update(6, positive=False)) is UpdatePlan.APPLY
    assert served(cache).estimator.predict_one(X) is False


async def test_stale_update_is_ignored() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, CODEC)
    await updater.offer(update(5, positive=True))
    assert await updater.offer(update(5, positive=False)) is UpdatePlan.STALE
    assert await updater.offer(update(3, positive=False)) is UpdatePlan.STALE
    assert served(cache).live_sequence == 5
    assert served(cache).estimator.predict_one(X) is True


async def test_update_for_undeployed_version_waits_for_its_deployment() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, CODEC)
    assert await updater.offer(update(7, base_version=2)) is UpdatePlan.NOT_DEPLOYED
    assert served(cache).live_sequence == 0
    cache.install(entry(2, 2))
    await updater.apply_pending("m")
    assert served(cache, 2).live_sequence == 7


async def test_update_before_any_deployment_is_applied_on_install() -> None:
    cache = ModelCache()
    updater = LiveUpdater(cache, CODEC)
    assert await updater.offer(update(3)) is UpdatePlan.NOT_DEPLOYED
    assert await updater.offer(update(2)) is UpdatePlan.NOT_DEPLOYED  # older: not kept
    cache.install(entry(1, 1))
    await updater.apply_pending("m")
    assert served(cache).live_sequence == 3


async def test_pinned_deployment_ignores_updates() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1, mode=R.SERVING_MODE_PINNED))
    updater = LiveUpdater(cache, CODEC)
    assert await updater.offer(update(4)) is UpdatePlan.PINNED
    assert served(cache).live_sequence == 0


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda u: setattr(u, "signature", "0" * 64), id="signature"),
        pytest.param(lambda u: setattr(u, "state", u.state + b"\x00"), id="state"),
        pytest.param(lambda u: setattr(u, "sha256", "f" * 64), id="sha256"),
    ],
)
async def test_tampered_update_is_refused(tamper, caplog: pytest.LogCaptureFixture) -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, CODEC)
    bad = update(9, positive=False)
    tamper(bad)
    assert await updater.offer(bad) is UpdatePlan.REFUSED
    assert served(cache).live_sequence == 0
    assert updater.counts[UpdatePlan.REFUSED] == 1
    assert "live update refused" in caplog.text
    assert cache.pending("m") is None  # never remembered for later either


async def test_update_signed_with_another_key_is_refused() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    foreign = update(9, codec=ArtifactCodec("someone-else"))
    assert await LiveUpdater(cache, CODEC).offer(foreign) is UpdatePlan.REFUSED


async def test_reinstall_keeps_live_state_unless_pinned() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    await LiveUpdater(cache, CODEC).offer(update(5))
    assert cache.reusable("m", 1, live=True) is served(cache)
    assert cache.reusable("m", 1, live=False) is None
    assert cache.reusable("m", 2, live=True) is None


async def test_only_the_newest_update_per_model_is_remembered_across_rebases() -> None:
    cache = ModelCache()
    updater = LiveUpdater(cache, CODEC)
    state = update(1)

    def rebased(base: int, sequence: int) -> events_pb2.ModelUpdate:
        message = events_pb2.ModelUpdate()
        message.CopyFrom(state)
        message.base_version, message.sequence = base, sequence
        return message

    for base in range(1, 41):  # a learner rebasing onto each new checkpoint
        assert await updater.offer(rebased(base, base * 10)) is UpdatePlan.NOT_DEPLOYED
    kept = cache.pending("m")
    assert isinstance(kept, events_pb2.ModelUpdate)
    assert (kept.base_version, kept.sequence) == (40, 400)
    await updater.offer(rebased(39, 390))  # older: not kept
    assert cache.pending("m").sequence == 400


async def test_install_forgets_an_update_whose_base_is_no_longer_routed() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, CODEC)
    assert await updater.offer(update(5, base_version=1)) is UpdatePlan.APPLY
    assert cache.install(entry(2, 1, 2))  # still routes 1: kept
    assert cache.pending("m").base_version == 1
    assert cache.install(entry(3, 2))  # promoted 2, 1 is gone: forgotten
    assert cache.pending("m") is None
    assert await updater.offer(update(9, base_version=3)) is UpdatePlan.NOT_DEPLOYED
    assert cache.install(entry(4, 2))  # base 3 is newer than what is routed: may be on its way
    assert cache.pending("m").base_version == 3
    cache.install(entry(5, 3))
    await updater.apply_pending("m")
    assert served(cache, 3).live_sequence == 9


def test_model_ready_per_model_and_version() -> None:
    cache = ModelCache()
    with pytest.raises(ModelNotFound, match="model 'm' not found"):
        cache.ready("m")
    cache.know("m")
    assert cache.ready("m") is False  # known, not deployed
    cache.install(entry(1, 1, 2))  # 1 primary, 2 shadow
    assert cache.ready("m") is True
    assert (cache.ready("m", "1"), cache.ready("m", "2"), cache.ready("m", "3")) == (
        True,
        True,
        False,
    )
    with pytest.raises(InvalidInput, match="version must be a version number, got 'latest'"):
        cache.ready("m", "latest")
    shadow_only = R.Deployment(
        model="m", revision=2, routes=[R.Route(version=2, weight=1.0, role=R.ROUTE_ROLE_SHADOW)]
    )
    cache.install(ModelEntry.build(model_proto(), shadow_only, {2: ServedVersion(2, None)}))
    assert cache.ready("m") is False  # nothing may answer


class CountingCodec(ArtifactCodec):
    """Records the thread of every signature check."""

    def __init__(self) -> None:
        super().__init__("unit-test-key")
        self.verified_in: list[int] = []

    def verify(self, content: bytes, signature: str, sha256: str | None = None) -> None:
        self.verified_in.append(threading.get_ident())
        super().verify(content, signature, sha256)


async def test_an_update_is_verified_once_and_off_the_event_loop() -> None:
    codec = CountingCodec()
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, codec)
    assert await updater.offer(update(5, positive=False)) is UpdatePlan.APPLY
    assert served(cache).estimator.predict_one(X) is False
    assert await updater.offer(update(7, base_version=2)) is UpdatePlan.NOT_DEPLOYED
    cache.install(entry(2, 2))
    await updater.apply_pending("m")  # remembered: already verified
    assert served(cache, 2).live_sequence == 7
    assert len(codec.verified_in) == 2
    assert threading.get_ident() not in codec.verified_in
