"""The model-updates handler and its dead-lettering, with an in-memory producer."""

from __future__ import annotations

from aiokafka import ConsumerRecord
from river import linear_model

from headwater.services.gateway.live_updates import LiveUpdater, UpdatePlan
from headwater.services.gateway.model_cache import ModelCache, ModelEntry, ServedVersion
from headwater.services.gateway.streams import ModelUpdateHandler
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.dead_letter import REASON_HEADER, TRUNCATED_HEADER
from headwater.shared.bus.record_policy import RecordPolicy
from headwater.shared.pb import events_pb2, registry_pb2
from tests.fakes import FakeProducer
from tests.signed_updates import forgeries, signed_update

R = registry_pb2
CODEC = ArtifactCodec("unit-test-key")
LIMIT = 64 * 1024


def record(value: bytes, offset: int) -> ConsumerRecord:
    return ConsumerRecord(
        "t.model-updates", 0, offset, 0, 0, b"m", value, None, len(b"m"), len(value), []
    )


def good_update(sequence: int) -> bytes:
    update = signed_update(CODEC, linear_model.LogisticRegression(), sequence=sequence)
    return update.SerializeToString()


def cache_serving_version_1() -> ModelCache:
    model = R.Model(
        name="m",
        task=R.TASK_BINARY,
        features=[R.Feature(name="x", type=R.FEATURE_TYPE_FLOAT, required=True)],
    )
    deployment = R.Deployment(
        model="m", revision=1, routes=[R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY)]
    )
    cache = ModelCache()
    cache.install(ModelEntry.build(model, deployment, {1: ServedVersion(1, None)}))
    return cache


async def test_an_oversize_bad_update_is_dead_lettered_truncated_and_the_batch_goes_on() -> None:
    producer = FakeProducer(outages=2, max_request_size=LIMIT)
    policy = RecordPolicy(producer, "gateway", stopping=lambda: False)  # type: ignore[arg-type]
    cache = cache_serving_version_1()
    handler = ModelUpdateHandler(LiveUpdater(cache, CODEC), policy)
    oversize = events_pb2.ModelUpdate(model="m", base_version=1, sequence=3, state=b"s" * 300_000)
    await handler([record(oversize.SerializeToString(), 0), record(good_update(4), 1)])
    assert cache.get("m").versions[1].live_sequence == 4  # offered although the bad one came first
    assert (policy.rejected, policy.failed, len(producer.sent)) == (1, 0, 1)
    sent = producer.sent[0]
    headers = dict(sent.headers)
    assert headers[TRUNCATED_HEADER] == str(oversize.ByteSize()).encode()
    assert 0 < len(sent.value) < oversize.ByteSize()
    assert oversize.SerializeToString().startswith(sent.value)


async def test_a_record_that_cannot_be_dead_lettered_never_aborts_its_batch() -> None:
    producer = FakeProducer(outages=1_000_000, max_request_size=LIMIT)
    stopping = False

    async def stop_soon() -> None:
        nonlocal stopping
        stopping = True

    policy = RecordPolicy(producer, "gateway", stopping=lambda: stopping)  # type: ignore[arg-type]
    cache = cache_serving_version_1()
    handler = ModelUpdateHandler(LiveUpdater(cache, CODEC), policy)
    await stop_soon()  # the gateway is stopping: retrying ends, the record is logged
    await handler([record(b"\xff not protobuf", 0), record(good_update(2), 1)])
    assert (policy.rejected, policy.failed) == (1, 1)
    assert cache.get("m").versions[1].live_sequence == 2


async def test_forged_updates_are_dead_lettered_and_never_hide_the_genuine_one() -> None:
    producer = FakeProducer(max_request_size=LIMIT)
    policy = RecordPolicy(producer, "gateway")  # type: ignore[arg-type]
    cache = cache_serving_version_1()
    updater = LiveUpdater(cache, CODEC)
    handler = ModelUpdateHandler(updater, policy)
    genuine = signed_update(CODEC, linear_model.LogisticRegression(), sequence=2)
    forged = forgeries(genuine, other_model="n")
    batch = [record(f.SerializeToString(), i) for i, (_, f) in enumerate(forged)]
    await handler([*batch, record(genuine.SerializeToString(), len(batch))])
    assert cache.get("m").versions[1].live_sequence == 2  # not 1002, and not hidden by it
    assert cache.pending_updates("n") == ()
    assert (policy.rejected, updater.counts[UpdatePlan.REFUSED]) == (3, 3)
    assert [sent.value for sent in producer.sent] == [r.value for r in batch]
    reasons = [dict(sent.headers)[REASON_HEADER].decode() for sent in producer.sent]
    assert reasons == [
        "ModelUpdate for 'm' (sequence 1002) does not verify: artifact signature does not "
        "verify: wrong signing key or tampered content",
        "ModelUpdate for 'n' (sequence 2) does not verify: artifact signature does not "
        "verify: wrong signing key or tampered content",
        "ModelUpdate for 'm' (sequence 2) does not verify: artifact signature does not "
        "verify: wrong signing key or tampered content",
    ]


async def test_an_update_of_an_older_trainer_is_dead_lettered_with_the_reason() -> None:
    producer = FakeProducer(max_request_size=LIMIT)
    policy = RecordPolicy(producer, "gateway")  # type: ignore[arg-type]
    cache = cache_serving_version_1()
    handler = ModelUpdateHandler(LiveUpdater(cache, CODEC), policy)
    artifact = CODEC.encode(linear_model.LogisticRegression())
    old = events_pb2.ModelUpdate(  # the state signed alone, progress in a header
        model="m", base_version=1, sequence=3, state=artifact.content,
        sha256=artifact.sha256, signature=artifact.signature,
    )  # fmt: skip
    await handler([record(old.SerializeToString(), 0)])
    assert cache.get("m").versions[1].live_sequence == 0
    [sent] = producer.sent
    reason = dict(sent.headers)[REASON_HEADER].decode()
    assert reason.startswith(
        "ModelUpdate for 'm' (sequence 3) has no embedded progress: an older trainer's format"
    )
