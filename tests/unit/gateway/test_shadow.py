"""Shadow predictions: off the request path, linked to the answered row, bounded queue."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from headwater.services.gateway.model_cache import ServedVersion
from headwater.services.gateway.routing import routing_key_hash
from headwater.services.gateway.service import InferenceService
from headwater.services.gateway.shadow import ShadowQueue
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import registry_pb2
from tests.unit.gateway.test_service import ListPublisher, make_cache, request, trained

R = registry_pb2
ROUTES = [
    R.Route(version=1, weight=1.0, role=R.ROUTE_ROLE_PRIMARY),
    R.Route(version=3, weight=1.0, role=R.ROUTE_ROLE_SHADOW),
]
DROPPED = "headwater_gateway_shadow_dropped_total"


def shadowed_service(shadow_estimator=None, queue: int = 1000) -> InferenceService:
    versions = {
        1: ServedVersion(1, trained(True)),
        3: ServedVersion(3, shadow_estimator or trained(False), live_sequence=8),
    }
    return InferenceService(
        make_cache(ROUTES, versions), ListPublisher(), "gw-1", 8, shadow_queue_max_requests=queue
    )


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value(DROPPED, {"model": "m", "reason": reason}) or 0.0


async def test_a_shadow_event_names_its_answered_row_and_shares_its_key() -> None:
    service = shadowed_service()
    req = request([1.0, 1.0], request_id="req-7")
    req.parameters["routing_key"].string_param = "user-7"
    response = await service.infer(req)
    answered = response.parameters["prediction_ids"].string_param.split(",")
    assert response.model_version == "1"
    assert len(service.publisher.events) == 2  # the answer's events only, so far
    await service.shadows.join()
    shadow = service.publisher.events[2:]
    assert [key for _, key, _ in shadow] == answered  # same key, same partition as the feedback
    assert {topic for topic, _, _ in shadow} == {Topic.PREDICTIONS}
    for (_, _, event), answered_id in zip(shadow, answered, strict=True):
        assert event.prediction_id == f"{answered_id}~v3"
        assert event.answered_prediction_id == answered_id
        assert (event.version, event.route_role, event.live_sequence) == (3, R.ROUTE_ROLE_SHADOW, 8)
        assert event.routing_key_hash == routing_key_hash("user-7")
        assert (event.request_id, event.gateway_id) == ("req-7", "gw-1")
        assert event.prediction.bool_label is False
    for _, key, event in service.publisher.events[:2]:  # the answered rows link to nothing
        assert event.answered_prediction_id == "" and key == event.prediction_id
        assert event.routing_key_hash == routing_key_hash("user-7")


async def test_a_shadow_never_changes_the_answer() -> None:
    plain = InferenceService(
        make_cache(ROUTES[:1], {1: ServedVersion(1, trained(True))}), ListPublisher(), "gw-1", 8
    )
    shadowed = shadowed_service()
    with_shadow = await shadowed.infer(request([1.0, 0.5]))
    without = await plain.infer(request([1.0, 0.5]))
    assert with_shadow.outputs == without.outputs
    assert with_shadow.parameters["headwater_version"] == without.parameters["headwater_version"]


class Exploding:
    def predict_proba_one(self, x):
        raise RuntimeError("the shadow is broken")


async def test_a_failing_shadow_is_logged_and_the_next_requests_still_mirror(caplog) -> None:
    service = shadowed_service(shadow_estimator=Exploding())
    response = await service.infer(request([1.0]))
    await service.shadows.join()
    assert response.model_version == "1"
    assert "shadow prediction failed" in caplog.text
    assert len(service.publisher.events) == 1
    service.cache.get("m").versions[3].estimator.predict_proba_one = lambda x: {True: 1.0}
    await service.infer(request([1.0]))
    await service.shadows.join()
    assert [e.route_role for _, _, e in service.publisher.events][-1] == R.ROUTE_ROLE_SHADOW


async def test_a_full_shadow_queue_drops_the_mirror_and_counts_it_never_the_answer() -> None:
    service = shadowed_service(queue=2)
    before = dropped("queue_full")
    responses = [await service.infer(request([1.0], request_id=f"r{i}")) for i in range(5)]
    assert [r.model_version for r in responses] == ["1"] * 5  # no turn of the loop in between
    assert service.shadows.dropped == 3
    assert dropped("queue_full") - before == 3
    await service.shadows.join()
    roles = [e.route_role for _, _, e in service.publisher.events]
    assert roles.count(R.ROUTE_ROLE_PRIMARY) == 5 and roles.count(R.ROUTE_ROLE_SHADOW) == 2


async def test_mirrors_left_when_the_queue_closes_are_counted_as_stopping() -> None:
    ran: list[str] = []
    queue: ShadowQueue[str] = ShadowQueue(max_requests=10, run=ran.append)
    before = dropped("stopping")
    for job in ("a", "b", "c"):
        assert queue.offer(job, model="m")
    await queue.close()  # before the worker had a turn
    assert ran == [] and queue.dropped == 3
    assert dropped("stopping") - before == 3
    assert queue.offer("d", model="m")  # a closed queue starts a new worker when offered again
    await queue.join()
    assert ran == ["d"]
    await queue.close()


async def test_the_worker_lets_other_tasks_run_between_mirrors() -> None:
    order: list[str] = []
    queue: ShadowQueue[str] = ShadowQueue(max_requests=10, run=order.append)
    for job in ("a", "b"):
        queue.offer(job, model="m")

    async def other() -> None:
        order.append("other")

    await asyncio.gather(other(), queue.join())
    assert order.index("other") < order.index("b")
    await queue.close()
