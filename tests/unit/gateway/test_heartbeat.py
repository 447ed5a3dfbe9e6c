"""The replica heartbeat: what it reports, the warm-up, the rolling overrides, an outage."""

from __future__ import annotations

from collections.abc import Iterable

from river import linear_model

from headwater.services.gateway.heartbeat import ReplicaHeartbeat, synthetic_row
from headwater.services.gateway.model_cache import ModelCache, ModelEntry, Override, ServedVersion
from headwater.services.gateway.routing import RouteTable
from headwater.services.gateway.service import InferenceService
from headwater.shared.errors import Unavailable
from headwater.shared.features import FeatureSchema, FeatureSpec
from headwater.shared.pb import oip_pb2, registry_pb2
from tests.unit.gateway.test_model_cache import X, model_proto

R = registry_pb2
PRIMARY, CHALLENGER = R.ROUTE_ROLE_PRIMARY, R.ROUTE_ROLE_CHALLENGER


class CountingModel(linear_model.LogisticRegression):
    """Counts its predictions; raises on them when ``broken``."""

    def __init__(self, broken: bool = False) -> None:
        super().__init__()
        self.predictions = 0
        self.broken = broken

    def predict_proba_one(self, x):  # type: ignore[no-untyped-def]
        self.predictions += 1
        if self.broken:
            raise ValueError("cannot predict")
        return super().predict_proba_one(x)


class FakeRegistry:
    """Takes heartbeats (or is down) and answers with the assignments it was given."""

    def __init__(self) -> None:
        self.beats: list[tuple[str, str, list[R.ReplicaVersion]]] = []
        self.assignments: list[R.ReplicaAssignment] = []
        self.down = False

    async def heartbeat(
        self, replica_id: str, address: str, versions: Iterable[R.ReplicaVersion]
    ) -> R.HeartbeatResponse:
        if self.down:
            raise Unavailable("registry unreachable")
        self.beats.append((replica_id, address, list(versions)))
        return R.HeartbeatResponse(assignments=self.assignments, replica_timeout_s=15)


def blue_green(revision: int, models: dict[int, CountingModel]) -> ModelEntry:
    """Version 1 primary, version 2 a challenger (a rolling rollout's routes before a switch)."""
    deployment = R.Deployment(
        model="m",
        revision=revision,
        routes=[
            R.Route(version=1, weight=1.0, role=PRIMARY),
            R.Route(version=2, weight=0.0, role=CHALLENGER),
        ],
    )
    versions = {v: ServedVersion(v, model) for v, model in models.items()}
    return ModelEntry.build(model_proto(), deployment, versions)


def harness() -> tuple[ModelCache, FakeRegistry, ReplicaHeartbeat, dict[int, CountingModel]]:
    cache = ModelCache()
    models = {1: CountingModel(), 2: CountingModel()}
    cache.install(blue_green(5, models))
    registry = FakeRegistry()
    beat = ReplicaHeartbeat(cache, registry, "gw-a", lambda: "a:8001", interval_s=0.01)
    return cache, registry, beat, models


def assign(version: int, revision: int) -> R.ReplicaAssignment:
    return R.ReplicaAssignment(model="m", version=version, deployment_revision=revision)


def answering(cache: ModelCache) -> list[int]:
    return [r.version for r in cache.get("m").routes.answering]


async def test_every_routed_version_is_warmed_up_once_and_reported_ready() -> None:
    _, registry, beat, models = harness()
    assert await beat.beat() and await beat.beat()
    (replica, address, versions), _ = registry.beats
    assert (replica, address) == ("gw-a", "a:8001")
    assert [(v.model, v.version, v.ready) for v in versions] == [("m", 1, True), ("m", 2, True)]
    assert all(v.warmup_latency_ms > 0 for v in versions)
    assert [m.predictions for m in models.values()] == [5, 5]  # the second beat reuses them


async def test_a_version_kept_for_its_grace_is_loaded_but_not_ready() -> None:
    cache, registry, beat, models = harness()
    await beat.beat()
    promoted = R.Deployment(
        model="m", revision=6, routes=[R.Route(version=2, weight=1.0, role=PRIMARY)]
    )
    cache.install(ModelEntry.build(model_proto(), promoted, {2: ServedVersion(2, models[2])}))
    await beat.beat()
    versions = registry.beats[-1][2]
    assert [(v.version, v.ready) for v in versions] == [(2, True), (1, False)]
    assert versions[1].warmup_latency_ms > 0  # measured when it was routed


async def test_a_version_whose_warm_up_fails_is_not_ready() -> None:
    cache = ModelCache()
    cache.install(blue_green(1, {1: CountingModel(), 2: CountingModel(broken=True)}))
    registry = FakeRegistry()
    await ReplicaHeartbeat(cache, registry, "gw", lambda: "h:1", 1.0).beat()
    assert [(v.version, v.ready) for v in registry.beats[0][2]] == [(1, True), (2, False)]


async def test_an_assignment_makes_its_version_answer_for_its_revision_only() -> None:
    cache, registry, beat, _ = harness()
    registry.assignments = [assign(2, revision=5)]
    await beat.beat()
    assert answering(cache) == [2]
    assert [r.version for r in cache.get("m").routes.challengers] == [1]  # still loaded, warm
    # a later deployment (the routes switched, or rolled back) supersedes it at once
    cache.install(blue_green(6, {1: CountingModel(), 2: CountingModel()}))
    assert answering(cache) == [1]
    registry.assignments = [assign(2, revision=6)]
    await beat.beat()
    assert answering(cache) == [2]
    registry.assignments = []  # the rollout ended: as deployed
    await beat.beat()
    assert answering(cache) == [1]


async def test_an_assignment_of_another_revision_or_an_unrouted_version_is_ignored() -> None:
    cache, registry, beat, _ = harness()
    registry.assignments = [assign(2, revision=4), assign(1, revision=5)]
    await beat.beat()
    assert answering(cache) == [1]
    cache.set_overrides({"m": Override(3, 5)})
    assert answering(cache) == [1]


async def test_the_service_answers_with_the_assigned_version() -> None:
    cache, registry, beat, _ = harness()
    service = InferenceService(cache, Publisher(), "gw-a", max_batch_rows=4)
    request = oip_pb2.ModelInferRequest(model_name="m", id="r1")
    request.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.append(X["x"])
    registry.assignments = [assign(2, revision=5)]
    await beat.beat()
    response = await service.infer(request)
    assert response.parameters["headwater_version"].int64_param == 2
    assert response.parameters["headwater_route_role"].string_param == "primary"


async def test_an_unreachable_registry_is_retried_and_serving_goes_on() -> None:
    cache, registry, beat, _ = harness()
    registry.assignments = [assign(2, revision=5)]
    await beat.beat()
    registry.down = True
    assert not await beat.beat()
    assert answering(cache) == [2]  # the last answer holds while its revision does
    registry.down = False
    registry.assignments = []
    assert await beat.beat()
    assert answering(cache) == [1]


def test_the_synthetic_row_has_every_feature_at_the_zero_of_its_type() -> None:
    schema = FeatureSchema((
        FeatureSpec("f", "float"), FeatureSpec("i", "int"), FeatureSpec("s", "str", False),
        FeatureSpec("b", "bool", False),
    ))  # fmt: skip
    assert synthetic_row(schema) == {"f": 0.0, "i": 0, "s": "", "b": False}


def test_answering_only_keeps_the_table_when_the_version_is_not_routed() -> None:
    table = blue_green(1, {1: CountingModel(), 2: CountingModel()}).routes
    assert isinstance(table, RouteTable) and table.answering_only(9) is table


class Publisher:
    def publish(self, topic, key, message, headers=None) -> None:  # type: ignore[no-untyped-def]
        pass
