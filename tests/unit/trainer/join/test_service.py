"""The join service: decoding, key checks, dead letters, one example per pair, sweep."""

from __future__ import annotations

import pytest

from headwater.services.trainer.join.pairing import Join, JoinOutcomeKind
from headwater.services.trainer.join.service import JoinService
from headwater.services.trainer.join.slots import Slot, SlotState, TraceHeaders
from headwater.shared.bus.codec import encode_event, encode_event_json, json_header
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import Unavailable
from headwater.shared.pb import events_pb2
from tests.fakes import FAST, FakeProducer


class Harness:
    def __init__(self, ttl: float = 10.0) -> None:
        self.now = 1000.0
        self.slots: dict[str, Slot] = {}
        self.emitted: list[events_pb2.LabeledExample] = []
        self.traces: list[TraceHeaders] = []
        self.rejected: list[tuple[ConsumedRecord, str]] = []
        self.service = JoinService(Join(ttl), self.slots, self, clock=lambda: self.now)

    async def emit(self, example: events_pb2.LabeledExample, trace: TraceHeaders) -> None:
        self.emitted.append(example)
        self.traces.append(trace)

    async def reject(self, record: ConsumedRecord, reason: str) -> None:
        self.rejected.append((record, reason))


def prediction_record(
    pid: str = "p-1", key: bytes | None = None, headers: tuple = ()
) -> ConsumedRecord:
    event = events_pb2.PredictionEvent(prediction_id=pid, model="m", version=4)
    event.features["a"].float_value = 2.0
    event.proba["True"] = 0.8
    event.prediction.bool_label = True
    event.predicted_at.seconds = 900
    return ConsumedRecord("hw.predictions", 1, 0, key or pid.encode(), encode_event(event), headers)


def feedback_record(
    pid: str = "p-1", label: bool = False, as_json: bool = True, headers: tuple = ()
) -> ConsumedRecord:
    event = events_pb2.FeedbackEvent(prediction_id=pid)
    event.label.bool_label = label
    if as_json:
        return ConsumedRecord(
            "hw.feedback", 1, 0, pid.encode(), encode_event_json(event), (json_header(), *headers)
        )
    return ConsumedRecord("hw.feedback", 1, 0, pid.encode(), encode_event(event), headers)


async def test_pair_becomes_one_example_with_the_prediction_context() -> None:
    h = Harness()
    await h.service.handle_prediction(prediction_record())
    h.now += 3
    outcome = await h.service.handle_feedback(feedback_record(label=False))
    assert outcome is not None and outcome.kind is JoinOutcomeKind.JOINED
    [example] = h.emitted
    assert example.example_id == example.prediction_id == "p-1"
    assert (example.model, example.served_version) == ("m", 4)
    assert example.label.bool_label is False
    assert example.prediction.bool_label is True
    assert dict(example.proba) == {"True": 0.8}
    assert example.features["a"].float_value == 2.0
    assert example.predicted_at.seconds == 900
    assert example.labelled_at.seconds == 1003  # no observed_at: when the label was joined


async def test_redelivered_events_emit_nothing_more() -> None:
    h = Harness()
    for record in [feedback_record(), prediction_record(), prediction_record(), feedback_record()]:
        await h.service.handle_prediction(record) if record.topic.endswith(
            "predictions"
        ) else await h.service.handle_feedback(record)
    assert len(h.emitted) == 1
    assert h.rejected == []


async def test_undecodable_or_incomplete_records_are_rejected_with_a_reason() -> None:
    h = Harness()
    garbage = ConsumedRecord("hw.feedback", 0, 0, b"k", b"\xff\xff")
    no_label = ConsumedRecord(
        "hw.feedback", 0, 0, b"p-2", encode_event(events_pb2.FeedbackEvent(prediction_id="p-2"))
    )
    assert await h.service.handle_feedback(garbage) is None
    assert await h.service.handle_feedback(no_label) is None
    assert await h.service.handle_prediction(prediction_record(key=b"other")) is None
    no_value = ConsumedRecord("hw.predictions", 0, 0, None, None)
    assert await h.service.handle_prediction(no_value) is None
    reasons = [reason for _, reason in h.rejected]
    assert reasons[0].startswith("malformed protobuf FeedbackEvent")
    assert reasons[1] == "FeedbackEvent for 'p-2' has no label"
    assert "is not the prediction id 'p-1'" in reasons[2]
    assert reasons[3] == "PredictionEvent record has no value"
    assert h.slots == {} and h.emitted == []


async def test_sweep_yields_expired_slots_only() -> None:
    h = Harness(ttl=10.0)
    await h.service.handle_prediction(prediction_record("old"))
    h.now += 6
    await h.service.handle_feedback(feedback_record("fresh"))
    h.now += 5
    assert [key for key, _ in h.service.sweep()] == ["old"]


async def test_agent_waits_out_an_outage_and_dead_letters_a_record_that_hits_a_bug(
    monkeypatch,
) -> None:
    from headwater.services.trainer.join import streams
    from headwater.shared.errors import Unavailable

    monkeypatch.setattr(streams, "RETRY", FAST)
    record = prediction_record()
    calls: list[str] = []
    producer = FakeProducer()
    policy = streams.join_policy(producer)  # type: ignore[arg-type]

    async def flaky(r: ConsumedRecord) -> None:
        calls.append("handle")
        if len(calls) < 3:
            raise Unavailable("dead-letter topic unreachable")

    async def buggy(r: ConsumedRecord) -> None:
        raise KeyError("oops")

    def rejected() -> list[str]:
        return [dict(sent.headers)[REASON_HEADER].decode() for sent in producer.sent]

    await policy.handle(record, flaky)
    assert calls == ["handle"] * 3 and rejected() == []
    await policy.handle(record, buggy)
    assert rejected() == ["trainer failed: KeyError"]


async def test_a_failed_emit_leaves_the_pair_waiting_so_the_retry_joins_it() -> None:
    h = Harness()
    await h.service.handle_prediction(prediction_record())
    failing = True

    async def emit(example: events_pb2.LabeledExample, trace: TraceHeaders) -> None:
        if failing:
            raise Unavailable("examples topic unreachable")
        h.emitted.append(example)

    h.emit = emit  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        await h.service.handle_feedback(feedback_record())
    assert h.slots["p-1"].state is SlotState.AWAITING_FEEDBACK  # not marked joined
    failing = False
    outcome = await h.service.handle_feedback(feedback_record())  # the retry, or a redelivery
    assert outcome is not None and outcome.kind is JoinOutcomeKind.JOINED
    assert [e.example_id for e in h.emitted] == ["p-1"]
    assert h.slots["p-1"].state is SlotState.JOINED
    again = await h.service.handle_feedback(feedback_record())
    assert again is not None and again.kind is JoinOutcomeKind.DUPLICATE


PREDICTION_TRACE = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
FEEDBACK_TRACE = (
    ("TraceParent", b"00-11111111111111111111111111111111-2222222222222222-01"),
    ("tracestate", b"vendor=1"),
)


@pytest.mark.parametrize("feedback_first", [False, True])
async def test_the_example_goes_on_with_the_prediction_trace(feedback_first: bool) -> None:
    h = Harness()
    records = [
        (h.service.handle_prediction, prediction_record(headers=PREDICTION_TRACE)),
        (h.service.handle_feedback, feedback_record(headers=FEEDBACK_TRACE)),
    ]
    for handle, record in reversed(records) if feedback_first else records:
        await handle(record)
    assert [e.example_id for e in h.emitted] == ["p-1"]
    assert h.traces == [PREDICTION_TRACE]


async def test_without_a_prediction_trace_the_example_goes_on_with_the_feedback_trace() -> None:
    h = Harness()
    await h.service.handle_prediction(prediction_record(headers=(("x-other", b"1"),)))
    await h.service.handle_feedback(feedback_record(headers=FEEDBACK_TRACE))
    assert h.traces == [(("traceparent", FEEDBACK_TRACE[0][1]), ("tracestate", b"vendor=1"))]
