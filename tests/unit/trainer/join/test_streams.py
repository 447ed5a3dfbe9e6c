"""The join agents' records through the record policy: headers as given, failures while emitting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from headwater.services.trainer.join.pairing import Join, JoinOutcomeKind
from headwater.services.trainer.join.service import JoinService
from headwater.services.trainer.join.slots import Slot, SlotState
from headwater.services.trainer.join.streams import BrokerOutlet, _agent, join_policy
from headwater.shared.bus.codec import header, protobuf_header
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.record_policy import RecordPolicy
from headwater.shared.bus.records import ConsumedRecord
from tests.fakes import FakeProducer
from tests.unit.trainer.join.test_service import (
    FEEDBACK_TRACE,
    PREDICTION_TRACE,
    feedback_record,
    prediction_record,
)


class Stream:
    """The part of a Faust stream an agent uses: ``events()`` yielding events with a message."""

    def __init__(self, *messages: Any) -> None:
        self.messages = messages

    async def events(self) -> AsyncIterator[Any]:
        for message in self.messages:
            yield SimpleNamespace(message=message)


def message(headers: Any, key: bytes = b"p-1", offset: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        topic="hw.feedback",
        partition=0,
        offset=offset,
        key=key,
        value=b'{"predictionId": "p-1"}',
        headers=headers,
    )


def reasons(producer: FakeProducer) -> list[str]:
    """The reasons of the dead letters ``producer`` was sent."""
    return [dict(sent.headers)[REASON_HEADER].decode() for sent in producer.sent]


async def test_a_header_with_a_null_value_reaches_the_handler_and_the_agent_carries_on() -> None:
    handled: list[ConsumedRecord] = []
    rejected: list[ConsumedRecord] = []
    policy = RecordPolicy(FakeProducer(), "trainer", on_reject=rejected.append)  # type: ignore[arg-type]

    async def handle(record: ConsumedRecord) -> None:
        handled.append(record)

    null_header = [("x-flag", None), ("content-type", b"application/json")]
    await _agent(policy, handle)(Stream(message(null_header), message([], key=b"p-2", offset=1)))

    assert [r.key for r in handled] == [b"p-1", b"p-2"]
    assert handled[0].headers == (("x-flag", None), ("content-type", b"application/json"))
    assert rejected == []


async def test_headers_that_cannot_be_read_dead_letter_the_record_instead_of_crashing() -> None:
    rejected: list[ConsumedRecord] = []
    producer = FakeProducer()
    policy = RecordPolicy(producer, "trainer", on_reject=rejected.append)  # type: ignore[arg-type]

    async def handle(record: ConsumedRecord) -> None:
        raise AssertionError("never handled")

    await _agent(policy, handle)(Stream(message([("x", "text")]), message(object(), offset=1)))

    assert [(r.key, r.headers) for r in rejected] == [(b"p-1", ()), (b"p-1", ())]
    assert all(reason.startswith("unreadable record headers") for reason in reasons(producer))


class FlakyExamplesTopic:
    """A Faust topic whose first sends time out, as during a broker stall."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[bytes] = []

        self.headers: list[list[tuple[str, bytes]]] = []

    async def send(self, key: bytes, value: bytes, headers: list) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError()
        self.sent.append(key)
        self.headers.append(headers)


async def test_a_stalled_examples_topic_retries_the_feedback_instead_of_losing_the_label() -> None:
    topic = FlakyExamplesTopic(failures=2)
    slots: dict[str, Slot] = {}
    producer = FakeProducer()
    policy = join_policy(producer)  # type: ignore[arg-type]

    service = JoinService(Join(60.0), slots, BrokerOutlet(topic, policy), clock=lambda: 1000.0)
    await service.handle_prediction(prediction_record())
    await policy.handle(feedback_record(), service.handle_feedback)

    assert reasons(producer) == []  # not dead-lettered as poison
    assert topic.sent == [b"m"]  # emitted once the broker took it
    assert slots["p-1"].state is SlotState.JOINED
    again = await service.handle_feedback(feedback_record())  # a redelivery now is a duplicate
    assert again is not None and again.kind is JoinOutcomeKind.DUPLICATE


async def test_the_emitted_example_carries_the_prediction_traceparent() -> None:
    topic = FlakyExamplesTopic(failures=0)
    producer = FakeProducer()
    outlet = BrokerOutlet(topic, join_policy(producer))  # type: ignore[arg-type]

    service = JoinService(Join(60.0), {}, outlet, clock=lambda: 1000.0)
    await service.handle_feedback(feedback_record(headers=FEEDBACK_TRACE))
    await service.handle_prediction(prediction_record(headers=PREDICTION_TRACE))
    await service.handle_prediction(prediction_record(pid="p-2"))
    await service.handle_feedback(feedback_record(pid="p-2"))

    traced, untraced = topic.headers
    assert header(traced, "content-type") == protobuf_header()[1]
    assert header(traced, "traceparent") == PREDICTION_TRACE[0][1]
    assert header(traced, "tracestate") is None  # the prediction's trace has no tracestate
    assert untraced == [protobuf_header()]  # no trace on either side: none invented
    assert reasons(producer) == []  # nothing was dead-lettered
