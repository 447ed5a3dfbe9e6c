"""The inference use case with an in-memory publisher: answers, events, drops."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from river import linear_model

from headwater.services.gateway.model_cache import ModelCache, ModelEntry, ServedVersion
from headwater.services.gateway.service import InferenceService
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import (
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ResourceExhausted,
)
from headwater.shared.features import features_from_proto
from headwater.shared.pb import events_pb2, oip_pb2, registry_pb2

R = registry_pb2


class ListPublisher:
    """Keeps published events; refuses once ``capacity`` is reached."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.events: list[tuple[Topic, str, events_pb2.PredictionEvent]] = []

    def publish(self, topic, key, message, headers=None) -> None:
        if len(self.events) >= self.capacity:
            raise ResourceExhausted("event buffer full")
        self.events.append((topic, key, message))


def trained(positive: bool) -> linear_model.LogisticRegression:
    model = linear_model.LogisticRegression()
    for _ in range(50):
        model.learn_one({"x": 1.0}, positive)
    return model


MIXED = [
    R.Feature(name="x", type=R.FEATURE_TYPE_FLOAT, required=True),
    R.Feature(name="city", type=R.FEATURE_TYPE_STR, required=False),
]
NUMERIC = [
    R.Feature(name="x", type=R.FEATURE_TYPE_FLOAT, required=True),
    R.Feature(name="y", type=R.FEATURE_TYPE_FLOAT, required=True),
]


def make_cache(
    routes: list[R.Route], versions: dict[int, ServedVersion], features=MIXED
) -> ModelCache:
    model = R.Model(name="m", task=R.TASK_BINARY, features=features)
    deployment = R.Deployment(model="m", routes=routes, mode=R.SERVING_MODE_LIVE, revision=1)
    cache = ModelCache()
    cache.install(ModelEntry.build(model, deployment, versions))
    cache.know("undeployed")
    return cache


PRIMARY_1 = [R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY)]


def request(xs: list[float], request_id: str = "req-1") -> oip_pb2.ModelInferRequest:
    req = oip_pb2.ModelInferRequest(model_name="m", id=request_id)
    tensor = req.inputs.add(name="x", datatype="FP64", shape=[len(xs)])
    tensor.contents.fp64_contents.extend(xs)
    return req


async def test_answer_parameters_and_one_event_per_row() -> None:
    publisher = ListPublisher()
    cache = make_cache(PRIMARY_1, {1: ServedVersion(1, trained(True), live_sequence=4)})
    service = InferenceService(cache, publisher, "gw-1", max_batch_rows=8)
    response = await service.infer(request([1.0, 1.0, 1.0]))
    assert (response.model_name, response.model_version, response.id) == ("m", "1", "req-1")
    assert response.parameters["headwater_version"].int64_param == 1
    assert response.parameters["live_sequence"].int64_param == 4
    ids = response.parameters["prediction_ids"].string_param.split(",")
    assert len(ids) == 3 and len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    predict, proba = response.outputs
    assert list(predict.contents.bool_contents) == [True, True, True]
    assert list(proba.shape) == [3, 2]
    assert [key for _, key, _ in publisher.events] == ids
    topic, _, event = publisher.events[0]
    assert topic is Topic.PREDICTIONS
    assert (event.prediction_id, event.model, event.version) == (ids[0], "m", 1)
    assert features_from_proto(event.features) == {"x": 1.0}
    assert event.prediction.bool_label is True
    assert event.proba["True"] > 0.5 > event.proba["False"]
    assert (event.route_role, event.live_sequence) == (R.ROUTE_ROLE_PRIMARY, 4)
    assert (event.gateway_id, event.request_id) == ("gw-1", "req-1")
    assert event.latency_ms > 0 and event.predicted_at.seconds > 0


async def test_raw_request_gets_raw_answer() -> None:
    cache = make_cache(PRIMARY_1, {1: ServedVersion(1, trained(False))}, NUMERIC)
    service = InferenceService(cache, ListPublisher(), "gw", max_batch_rows=8)
    req = oip_pb2.ModelInferRequest(model_name="m")
    req.inputs.add(name="input__0", datatype="FP32", shape=[2, 2])
    req.raw_input_contents.append(np.array([[1, 0], [1, 0]], "<f4").tobytes())
    req.outputs.add(name="predict")
    response = await service.infer(req)
    assert [o.name for o in response.outputs] == ["predict"]
    assert np.frombuffer(response.raw_output_contents[0], "?").tolist() == [False, False]


async def test_full_buffer_drops_events_but_answers() -> None:
    publisher = ListPublisher(capacity=2)
    cache = make_cache(PRIMARY_1, {1: ServedVersion(1, trained(True))})
    service = InferenceService(cache, publisher, "gw", max_batch_rows=8)
    response = await service.infer(request([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert len(response.parameters["prediction_ids"].string_param.split(",")) == 5
    assert len(publisher.events) == 2
    assert service.events_dropped == 3


async def test_shadow_predicts_after_the_answer_and_never_answers() -> None:
    publisher = ListPublisher()
    routes = [
        R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY),
        R.Route(version=2, weight=1.0, role=R.ROUTE_ROLE_SHADOW),
    ]
    versions = {1: ServedVersion(1, trained(True)), 2: ServedVersion(2, trained(False))}
    service = InferenceService(make_cache(routes, versions), publisher, "gw", max_batch_rows=8)
    response = await service.infer(request([1.0, 1.0]))
    assert response.model_version == "1"
    assert list(response.outputs[0].contents.bool_contents) == [True, True]
    await service.shadows.join()  # the shadows run in a background task, after the answer
    shadow = [e for _, _, e in publisher.events if e.route_role == R.ROUTE_ROLE_SHADOW]
    assert [e.version for e in shadow] == [2, 2]
    assert [e.prediction.bool_label for e in shadow] == [False, False]
    assert {e.request_id for e in shadow} == {"req-1"}


async def test_version_asked_for_by_the_caller() -> None:
    routes = [
        R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY),
        R.Route(version=2, weight=1.0, role=R.ROUTE_ROLE_SHADOW),
    ]
    versions = {1: ServedVersion(1, trained(True)), 2: ServedVersion(2, trained(False))}
    service = InferenceService(make_cache(routes, versions), ListPublisher(), "gw", 8)
    req = request([1.0])
    req.model_version = "2"
    assert (await service.infer(req)).model_version == "2"
    req.model_version = "7"
    with pytest.raises(
        ModelNotFound, match=r"version 7 of model 'm' is not deployed \(deployed: 1, 2\)"
    ):
        await service.infer(req)
    req.model_version = "latest"
    with pytest.raises(InvalidInput, match="model_version must be a version number"):
        await service.infer(req)


async def test_errors() -> None:
    cache = make_cache(PRIMARY_1, {1: ServedVersion(1, trained(True))})
    service = InferenceService(cache, ListPublisher(), "gw", max_batch_rows=2)
    with pytest.raises(ModelNotFound, match="model 'nope' not found"):
        await service.infer(oip_pb2.ModelInferRequest(model_name="nope"))
    with pytest.raises(ModelNotReady, match="model 'undeployed' is not deployed"):
        await service.infer(oip_pb2.ModelInferRequest(model_name="undeployed"))
    with pytest.raises(InvalidInput, match="batch of 3 rows is over the limit of 2"):
        await service.infer(request([1.0, 2.0, 3.0]))
    bad_output = request([1.0])
    bad_output.outputs.add(name="scores")
    with pytest.raises(InvalidInput, match="unknown output 'scores'"):
        await service.infer(bad_output)


async def test_an_int_feature_beyond_int64_is_refused_before_any_event_is_published() -> None:
    publisher = ListPublisher()
    features = [R.Feature(name="n", type=R.FEATURE_TYPE_INT, required=True)]
    model = linear_model.LogisticRegression()
    cache = make_cache(PRIMARY_1, {1: ServedVersion(1, model)}, features)
    service = InferenceService(cache, publisher, "gw", max_batch_rows=8)
    req = oip_pb2.ModelInferRequest(model_name="m")
    req.inputs.add(name="n", datatype="UINT64", shape=[3]).contents.uint64_contents.extend(
        [1, 2, 2**63]
    )
    with pytest.raises(InvalidInput, match=r"input 'n': value 9223372036854775808 at row 2"):
        await service.infer(req)
    assert publisher.events == []


async def test_a_request_whose_events_cannot_all_be_built_publishes_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from headwater.services.gateway import service as service_module

    calls = 0
    real = service_module.features_to_proto

    def fails_on_the_third_row(row):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise InvalidInput("feature 'x' cannot be encoded")
        return real(row)

    monkeypatch.setattr(service_module, "features_to_proto", fails_on_the_third_row)
    publisher = ListPublisher()
    routes = [
        R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY),
        R.Route(version=2, weight=1.0, role=R.ROUTE_ROLE_SHADOW),
    ]
    versions = {1: ServedVersion(1, trained(True)), 2: ServedVersion(2, trained(False))}
    service = InferenceService(make_cache(routes, versions), publisher, "gw", max_batch_rows=8)
    with pytest.raises(InvalidInput, match="cannot be encoded"):
        await service.infer(request([1.0, 1.0, 1.0, 1.0]))
    for _ in range(3):
        await asyncio.sleep(0)  # a shadow would have run by now
    assert publisher.events == []


@pytest.mark.parametrize(
    ("task", "label", "datatype", "field", "before", "after"),
    [
        (R.TASK_BINARY, True, "BOOL", "bool_contents", [False], [True]),
        (R.TASK_MULTICLASS, 3, "BYTES", "bytes_contents", [b""], [b"3"]),
    ],
)
async def test_predict_datatype_is_stable_from_no_class_to_learned_and_matches_metadata(
    task, label, datatype, field, before, after
) -> None:
    from river import tree

    from headwater.services.gateway.metadata import model_metadata

    estimator = tree.HoeffdingTreeClassifier()
    model = R.Model(name="m", task=task, features=MIXED)
    deployment = R.Deployment(model="m", routes=PRIMARY_1, revision=1)
    cache = ModelCache()
    cache.install(ModelEntry.build(model, deployment, {1: ServedVersion(1, estimator)}))
    service = InferenceService(cache, ListPublisher(), "gw", max_batch_rows=8)
    advertised = {t.name: t.datatype for t in model_metadata(cache.get("m")).outputs}
    assert advertised["predict"] == datatype

    first = await service.infer(request([1.0]))  # knows no class yet
    estimator.learn_one({"x": 1.0}, label)
    second = await service.infer(request([1.0]))
    for response, expected in ((first, before), (second, after)):
        predict = response.outputs[0]
        assert predict.datatype == datatype
        assert list(getattr(predict.contents, field)) == expected
    assert list(first.outputs[1].shape) == [1, 0]  # no class: no probability
