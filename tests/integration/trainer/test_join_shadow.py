"""Shadow predictions in the join on the real broker: one label, an example per prediction."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from headwater.services.trainer.join.slots import SlotState
from headwater.services.trainer.join.streams import JoinStreams
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.bus.codec import decode_event, encode_event, header, protobuf_header
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, read_records
from tests.integration.trainer.test_join import feedback, prediction, produce, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SHADOW = registry_pb2.ROUTE_ROLE_SHADOW


@asynccontextmanager
async def running_join(
    kafka: KafkaSettings, settings: TrainerSettings, data_dir: Path
) -> AsyncIterator[JoinStreams]:
    """The join's Faust app, started and ready; stopped on exit."""
    producer = EventProducer(kafka, client_id="test-trainer")
    await producer.start()
    streams = JoinStreams(settings, kafka.partitions, data_dir, producer)
    try:
        await streams.start()
        await streams.wait_ready(30)
        yield streams
    finally:
        await streams.stop(5)
        await producer.stop(2)


def shadow_of(answer: events_pb2.PredictionEvent, version: int = 2) -> events_pb2.PredictionEvent:
    """The shadow prediction of ``version`` mirroring the request ``answer`` answered."""
    shadow = events_pb2.PredictionEvent()
    shadow.CopyFrom(answer)
    shadow.prediction_id = f"{answer.prediction_id}~v{version}"
    shadow.version, shadow.route_role = version, SHADOW
    shadow.answered_prediction_id = answer.prediction_id
    shadow.prediction.bool_label = True
    shadow.proba["True"] = 0.9
    return shadow


def as_record(topic: Topic, event, key: str):
    return (topic, key.encode(), encode_event(event), [protobuf_header()])


def predicted(event: events_pb2.PredictionEvent):
    """A prediction's record, keyed as the gateway keys it (a shadow by its answer's id)."""
    return as_record(Topic.PREDICTIONS, event, event.answered_prediction_id or event.prediction_id)


def labelled(answer: events_pb2.PredictionEvent, label: bool):
    return as_record(Topic.FEEDBACK, feedback(answer.prediction_id, label), answer.prediction_id)


def decoded(records) -> dict[str, events_pb2.LabeledExample]:
    examples = [decode_event(events_pb2.LabeledExample, r.value, r.headers) for r in records]
    return {example.example_id: example for example in examples}


async def test_one_label_makes_an_example_of_the_answer_and_of_each_shadow(
    kafka_settings: KafkaSettings,
) -> None:
    first, second = prediction(x=1.0), prediction(x=2.0)
    early, late = shadow_of(first), shadow_of(second, version=3)
    misrouted = shadow_of(second, version=4)
    with tempfile.TemporaryDirectory() as data_dir:
        async with running_join(kafka_settings, settings_for(kafka_settings), Path(data_dir)):
            await produce(
                kafka_settings,
                [
                    predicted(early),  # before its answer
                    predicted(first),
                    labelled(first, True),
                    predicted(second),
                    labelled(second, False),
                    predicted(late),  # after the label joined
                    predicted(late),  # redelivered
                    as_record(Topic.PREDICTIONS, misrouted, misrouted.prediction_id),
                ],
            )
            records = await read_records(kafka_settings, Topic.EXAMPLES, count=4, timeout_s=20)
            dead = await read_records(kafka_settings, Topic.DEAD_LETTER, count=1, timeout_s=20)
            again = await read_records(kafka_settings, Topic.EXAMPLES, count=4, timeout_s=2)
    examples = decoded(records)
    assert sorted(examples) == sorted(
        [first.prediction_id, early.prediction_id, second.prediction_id, late.prediction_id]
    )
    assert len(again) == 4  # no second example of anything
    assert {r.key for r in records} == {b"churn"}
    for shadow, answer, label in [(early, first, True), (late, second, False)]:
        example = examples[shadow.prediction_id]
        assert example.route_role == SHADOW
        assert example.served_version == shadow.version
        assert example.prediction_id == shadow.prediction_id
        assert example.answered_prediction_id == answer.prediction_id
        assert example.label.bool_label is label
        assert example.prediction.bool_label is True and dict(example.proba) == {"True": 0.9}
        assert example.features["x"].float_value == answer.features["x"].float_value
        answered = examples[answer.prediction_id]
        assert (answered.route_role, answered.answered_prediction_id) == (0, "")
        assert answered.served_version == 1 and answered.label.bool_label is label
    [rejected] = dead
    assert rejected.key == misrouted.prediction_id.encode()
    assert b"is not the answered prediction id" in header(rejected.headers, REASON_HEADER)


async def test_waiting_shadows_survive_a_restart(kafka_settings: KafkaSettings) -> None:
    settings = settings_for(kafka_settings, join_ttl_s=60.0)
    answered, unanswered = prediction(x=1.0), prediction(x=2.0)
    waiting = shadow_of(answered)  # waits with its answer for the label
    alone = shadow_of(unanswered)  # waits for its answer and the label
    with tempfile.TemporaryDirectory() as data_dir:
        async with running_join(kafka_settings, settings, Path(data_dir)) as first:
            await produce(
                kafka_settings, [predicted(answered), predicted(waiting), predicted(alone)]
            )
            assert first.service is not None
            slots = first.service.slots

            async def both_waiting() -> bool:
                return len(slots) == 2 and all(len(slots[k].shadows) == 1 for k in slots)

            await eventually(both_waiting, timeout_s=10, what="two slots with a waiting shadow")

        async with running_join(kafka_settings, settings, Path(data_dir)) as second:
            assert second.service is not None
            recovered = second.service.slots
            assert recovered[answered.prediction_id].state is SlotState.AWAITING_FEEDBACK
            assert recovered[unanswered.prediction_id].state is SlotState.AWAITING_BOTH
            assert [s.prediction_id for s in recovered[answered.prediction_id].shadows] == [
                waiting.prediction_id
            ]
            await produce(
                kafka_settings,
                [labelled(answered, True), labelled(unanswered, False), predicted(unanswered)],
            )
            records = await read_records(kafka_settings, Topic.EXAMPLES, count=4, timeout_s=20)
    examples = decoded(records)
    assert sorted(examples) == sorted(
        p.prediction_id for p in (answered, waiting, unanswered, alone)
    )
    assert examples[waiting.prediction_id].label.bool_label is True
    assert examples[alone.prediction_id].label.bool_label is False
    assert examples[alone.prediction_id].answered_prediction_id == unanswered.prediction_id
