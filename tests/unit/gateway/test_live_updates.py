"""Live updates: verified once, planned, swapped in safely, remembered for later deployments."""

from __future__ import annotations

import threading

import pytest
from river import linear_model

from headwater.services.gateway.live_updates import LiveUpdater, UpdatePlan
from headwater.services.gateway.model_cache import ModelCache
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.model_updates import sign_update
from headwater.shared.pb import events_pb2, registry_pb2
from tests.signed_updates import forgeries, signed_update
from tests.unit.gateway.test_model_cache import X, entry, served

R = registry_pb2
CODEC = ArtifactCodec("unit-test-key")


def trained(positive: bool, n: int = 30) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression()
    for _ in range(n):
        model.learn_one(X, positive)
    return model


def update(
    sequence: int, base_version: int = 1, positive: bool = True, codec: ArtifactCodec = CODEC
) -> events_pb2.ModelUpdate:
    return signed_update(codec, trained(positive), "m", base_version, sequence)


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
    assert cache.pending_updates("m") == ()  # never remembered for later either


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


async def test_remembered_updates_stay_bounded_however_many_versions_publish() -> None:
    cache = ModelCache()
    updater = LiveUpdater(cache, CODEC)
    state = update(1)

    def rebased(base: int, sequence: int) -> events_pb2.ModelUpdate:
        message = events_pb2.ModelUpdate()
        message.CopyFrom(state)
        message.base_version, message.sequence = base, sequence
        sign_update(CODEC, message)  # the learner signs every update it publishes
        return message

    for base in range(1, 41):  # a learner per version, none of them deployed yet
        assert await updater.offer(rebased(base, base * 10)) is UpdatePlan.NOT_DEPLOYED
    kept = cache.pending_updates("m")
    assert [(u.base_version, u.sequence) for u in kept] == [
        (37, 370),
        (38, 380),
        (39, 390),
        (40, 400),
    ]
    await updater.offer(rebased(39, 389))  # older than that learner's newest: not kept
    assert cache.pending("m", 39).sequence == 390


async def test_install_forgets_an_update_whose_base_is_no_longer_routed() -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, CODEC)
    assert await updater.offer(update(5, base_version=1)) is UpdatePlan.APPLY
    assert cache.install(entry(2, 1, 2))  # still routes 1: kept
    assert cache.pending("m", 1).sequence == 5
    assert cache.install(entry(3, 2))  # promoted 2, 1 is gone: forgotten
    assert cache.pending_updates("m") == ()
    assert await updater.offer(update(9, base_version=3)) is UpdatePlan.NOT_DEPLOYED
    assert cache.install(entry(4, 2))  # base 3 is newer than what is routed: may be on its way
    assert cache.pending("m", 3).sequence == 9
    cache.install(entry(5, 3))
    await updater.apply_pending("m")
    assert served(cache, 3).live_sequence == 9


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


@pytest.mark.parametrize(
    "forgery", ["a raised sequence", "replayed under another model name", "altered offsets"]
)
async def test_a_forged_update_is_refused_and_its_reason_handed_back(forgery: str) -> None:
    cache = ModelCache()
    cache.install(entry(1, 1))
    updater = LiveUpdater(cache, CODEC)
    genuine = update(5, positive=False)
    forged = dict(forgeries(genuine, other_model="n"))[forgery]
    reasons: list[str] = []

    async def on_refused(reason: str) -> None:
        reasons.append(reason)

    assert await updater.offer(forged, on_refused) is UpdatePlan.REFUSED
    assert served(cache).live_sequence == 0
    assert cache.pending_updates("m") == () and cache.pending_updates("n") == ()
    assert reasons == [
        f"ModelUpdate for {forged.model!r} (sequence {forged.sequence}) does not verify: "
        "artifact signature does not verify: wrong signing key or tampered content"
    ]
    assert await updater.offer(genuine, on_refused) is UpdatePlan.APPLY
    assert served(cache).live_sequence == 5 and len(reasons) == 1
