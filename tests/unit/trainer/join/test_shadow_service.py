"""The join service with shadow predictions: one label, one example per prediction, key checks."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from headwater.services.trainer.join.pairing import MAX_SHADOWS_PER_ANSWER, JoinOutcomeKind
from headwater.services.trainer.join.slots import SlotState, TraceHeaders
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import Unavailable
from headwater.shared.pb import events_pb2, registry_pb2
from tests.unit.trainer.join.test_service import (
    FEEDBACK_TRACE,
    PREDICTION_TRACE,
    Harness,
    feedback_record,
    prediction_record,
)

SHADOW = registry_pb2.ROUTE_ROLE_SHADOW


def shadow_event(answered: str = "p-1", version: int = 5) -> events_pb2.PredictionEvent:
    event = events_pb2.PredictionEvent(
        prediction_id=f"{answered}~v{version}",
        model="m",
        version=version,
        route_role=SHADOW,
        answered_prediction_id=answered,
    )
    event.features["a"].float_value = 2.0
    event.proba["True"] = 0.3
    event.prediction.bool_label = False
    event.predicted_at.seconds = 901
    return event


def shadow_record(
    answered: str = "p-1",
    version: int = 5,
    key: bytes | None = None,
    headers: tuple = (),
    event: events_pb2.PredictionEvent | None = None,
) -> ConsumedRecord:
    value = encode_event(event or shadow_event(answered, version))
    return ConsumedRecord("hw.predictions", 1, 0, key or answered.encode(), value, headers)


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"headwater_trainer_{name}", labels) or 0.0


async def test_one_label_makes_the_answer_example_and_the_shadow_example() -> None:
    h = Harness()
    await h.service.handle_prediction(prediction_record())
    await h.service.handle_prediction(shadow_record())
    h.now += 3
    outcome = await h.service.handle_feedback(feedback_record(label=True))
    assert outcome is not None and outcome.kind is JoinOutcomeKind.JOINED
    answer, shadow = h.emitted
    assert (answer.example_id, answer.route_role, answer.answered_prediction_id) == ("p-1", 0, "")
    assert shadow.example_id == shadow.prediction_id == "p-1~v5"
    assert (shadow.model, shadow.served_version, shadow.route_role) == ("m", 5, SHADOW)
    assert shadow.answered_prediction_id == "p-1"
    assert shadow.label.bool_label is True
    assert shadow.prediction.bool_label is False and dict(shadow.proba) == {"True": 0.3}
    assert shadow.features["a"].float_value == 2.0
    assert shadow.predicted_at.seconds == 901 and shadow.labelled_at.seconds == 1003


@pytest.mark.parametrize(
    "order",
    [
        ["shadow", "prediction", "feedback"],
        ["prediction", "shadow", "feedback"],
        ["prediction", "feedback", "shadow"],
        ["feedback", "shadow", "prediction"],
        ["shadow", "feedback", "prediction"],
        ["feedback", "prediction", "shadow"],
    ],
    ids="-".join,
)
async def test_every_order_emits_each_example_once(order: list[str]) -> None:
    h = Harness()
    handlers = {
        "prediction": lambda: h.service.handle_prediction(prediction_record()),
        "shadow": lambda: h.service.handle_prediction(shadow_record()),
        "feedback": lambda: h.service.handle_feedback(feedback_record()),
    }
    for side in order + order:  # every event delivered twice
        await handlers[side]()
    assert sorted(e.example_id for e in h.emitted) == ["p-1", "p-1~v5"]
    assert h.rejected == []
    assert h.slots["p-1"].state is SlotState.JOINED


async def test_several_shadows_each_make_one_example() -> None:
    h = Harness()
    await h.service.handle_prediction(shadow_record(version=5))
    await h.service.handle_prediction(prediction_record())
    await h.service.handle_prediction(shadow_record(version=6))
    await h.service.handle_feedback(feedback_record())
    await h.service.handle_prediction(shadow_record(version=7))  # after the join
    assert [(e.example_id, e.served_version) for e in h.emitted] == [
        ("p-1", 4),
        ("p-1~v5", 5),
        ("p-1~v6", 6),
        ("p-1~v7", 7),
    ]


async def test_shadow_events_and_joins_are_counted() -> None:
    before = {
        "waiting": count("join_events_total", side="shadow", outcome="waiting"),
        "joined": count("join_events_total", side="shadow", outcome="joined"),
        "duplicate": count("join_events_total", side="shadow", outcome="duplicate"),
        "emitted": count("shadow_examples_emitted_total", model="m"),
        "examples": count("examples_emitted_total", model="m"),
    }
    h = Harness()
    await h.service.handle_prediction(shadow_record(version=5))
    await h.service.handle_feedback(feedback_record())
    await h.service.handle_prediction(shadow_record(version=6))
    await h.service.handle_prediction(shadow_record(version=6))
    await h.service.handle_prediction(prediction_record())
    assert count("join_events_total", side="shadow", outcome="waiting") == before["waiting"] + 1
    assert count("join_events_total", side="shadow", outcome="joined") == before["joined"] + 1
    assert count("join_events_total", side="shadow", outcome="duplicate") == before["duplicate"] + 1
    assert count("shadow_examples_emitted_total", model="m") == before["emitted"] + 2
    assert count("examples_emitted_total", model="m") == before["examples"] + 3


async def test_unlabelled_shadows_expire_with_their_slot_and_are_counted() -> None:
    h = Harness(ttl=10.0)
    shadows_before = count("join_expired_total", side="shadow")
    predictions_before = count("join_expired_total", side="prediction")
    await h.service.handle_prediction(shadow_record("lonely"))  # never answered nor labelled
    await h.service.handle_prediction(prediction_record("p-2"))
    await h.service.handle_prediction(shadow_record("p-2", version=5))
    await h.service.handle_prediction(shadow_record("p-2", version=6))
    h.now += 10
    assert sorted(key for key, _ in h.service.sweep()) == ["lonely", "p-2"]
    assert count("join_expired_total", side="shadow") == shadows_before + 3
    assert count("join_expired_total", side="prediction") == predictions_before + 1
    # a label after the TTL replaces the expired slot: its shadows are counted as lost too
    await h.service.handle_prediction(shadow_record("p-3"))
    h.now += 10
    await h.service.handle_feedback(feedback_record("p-3"))
    assert count("join_expired_total", side="shadow") == shadows_before + 4
    assert h.emitted == []


async def test_a_shadow_keyed_by_its_own_id_is_dead_lettered() -> None:
    h = Harness()
    assert await h.service.handle_prediction(shadow_record(key=b"p-1~v5")) is None
    [(_, reason)] = h.rejected
    assert reason.startswith("record key 'p-1~v5' is not the answered prediction id 'p-1': ")
    assert "keyed by the answered prediction id" in reason
    assert h.slots == {}


async def test_a_shadow_naming_no_answer_or_a_non_shadow_naming_one_is_dead_lettered() -> None:
    h = Harness()
    nameless = shadow_event()
    nameless.answered_prediction_id = ""
    canary = shadow_event()
    canary.route_role = registry_pb2.ROUTE_ROLE_CANARY
    itself = shadow_event()
    itself.answered_prediction_id = itself.prediction_id
    dead_before = count("join_events_total", side="shadow", outcome="dead_lettered")
    for event, key in [(nameless, b"p-1~v5"), (canary, b"p-1~v5"), (itself, b"p-1~v5")]:
        assert await h.service.handle_prediction(shadow_record(key=key, event=event)) is None
    reasons = [reason for _, reason in h.rejected]
    assert reasons[0].startswith("shadow PredictionEvent 'p-1~v5' has no answered_prediction_id")
    assert reasons[1].startswith(
        "PredictionEvent 'p-1~v5' names answered prediction 'p-1' but its route role is "
        "ROUTE_ROLE_CANARY"
    )
    assert reasons[2].startswith("shadow PredictionEvent 'p-1~v5' names itself")
    assert h.slots == {} and h.emitted == []
    assert count("join_events_total", side="shadow", outcome="dead_lettered") == dead_before + 2


async def test_one_shadow_too_many_is_dead_lettered() -> None:
    h = Harness()
    for version in range(MAX_SHADOWS_PER_ANSWER):
        await h.service.handle_prediction(shadow_record(version=version))
    assert await h.service.handle_prediction(shadow_record(version=99)) is None
    [(_, reason)] = h.rejected
    assert "is one too many" in reason


async def test_a_failed_emit_leaves_the_answer_and_its_shadow_waiting() -> None:
    h = Harness()
    await h.service.handle_prediction(prediction_record())
    await h.service.handle_prediction(shadow_record())
    sent: list[str] = []

    async def emit(example: events_pb2.LabeledExample, trace: TraceHeaders) -> None:
        if example.route_role == SHADOW and len(sent) < 2:
            sent.append("failed")
            raise Unavailable("examples topic unreachable")
        sent.append(example.example_id)

    h.emit = emit  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await h.service.handle_feedback(feedback_record())
    assert h.slots["p-1"].state is SlotState.AWAITING_FEEDBACK
    assert [s.prediction_id for s in h.slots["p-1"].shadows] == ["p-1~v5"]
    await h.service.handle_feedback(feedback_record())  # the retry: the answer is sent again
    assert sent == ["p-1", "failed", "p-1", "p-1~v5"]
    assert h.slots["p-1"].state is SlotState.JOINED


async def test_a_shadow_example_goes_on_with_the_shadow_trace_else_the_label_trace() -> None:
    h = Harness()
    await h.service.handle_prediction(shadow_record(version=5, headers=PREDICTION_TRACE))
    await h.service.handle_feedback(feedback_record(headers=FEEDBACK_TRACE))
    await h.service.handle_prediction(prediction_record())
    await h.service.handle_prediction(shadow_record(version=6))  # late, without a trace
    assert [e.example_id for e in h.emitted] == ["p-1~v5", "p-1", "p-1~v6"]
    label_trace = (("traceparent", FEEDBACK_TRACE[0][1]), ("tracestate", b"vendor=1"))
    assert h.traces == [PREDICTION_TRACE, label_trace, label_trace]
