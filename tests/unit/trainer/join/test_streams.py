"""The join agents' record handling: headers as aiokafka gives them, failures while emitting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from headwater.services.trainer.join.service import IncomingRecord, JoinService
from headwater.services.trainer.join.slots import Join, JoinOutcomeKind, Slot, SlotState
from headwater.services.trainer.join.streams import BrokerOutlet, _consume, _handle_safely
from headwater.shared.bus.codec import header, protobuf_header
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


def message(headers: Any, key: bytes = b"p-1") -> SimpleNamespace:
    return SimpleNamespace(
        topic="hw.feedback", partition=0, key=key, value=b'{"predictionId": "p-1"}', headers=headers
    )


async def test_a_header_with_a_null_value_reaches_the_handler_and_the_agent_carries_on() -> None:
    handled: list[IncomingRecord] = []
    rejected: list[tuple[IncomingRecord, str]] = []

    async def handle(record: IncomingRecord) -> None:
        handled.append(record)

    async def reject(record: IncomingRecord, reason: str) -> None:
        rejected.append((record, reason))

    null_header = [("x-flag", None), ("content-type", b"application/json")]
    await _consume(handle, reject)(Stream(message(null_header), message([], key=b"p-2")))

    assert [r.key for r in handled] == [b"p-1", b"p-2"]
    assert handled[0].headers == (("x-flag", None), ("content-type", b"application/json"))
    assert rejected == []


async def test_headers_that_cannot_be_read_dead_letter_the_record_instead_of_crashing() -> None:
    rejected: list[tuple[IncomingRecord, str]] = []

    async def handle(record: IncomingRecord) -> None:
        raise AssertionError("never handled")

    async def reject(record: IncomingRecord, reason: str) -> None:
        rejected.append((record, reason))

    await _consume(handle, reject)(Stream(message([("x", "text")]), message(object())))

    assert [(r.key, r.headers) for r, _ in rejected] == [(b"p-1", ()), (b"p-1", ())]
    assert all(reason.startswith("unreadable record headers") for _, reason in rejected)


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


class Outlet(BrokerOutlet):
    """The broker outlet on a fake examples topic, dead letters handed to ``reject``."""

    def __init__(self, examples: FlakyExamplesTopic, reject: Any) -> None:
        super().__init__(examples, producer=None)  # type: ignore[arg-type]
        self.reject = reject  # type: ignore[method-assign]


async def test_a_stalled_examples_topic_retries_the_feedback_instead_of_losing_the_label() -> None:
    topic = FlakyExamplesTopic(failures=2)
    slots: dict[str, Slot] = {}
    rejected: list[str] = []

    async def reject(record: IncomingRecord, reason: str) -> None:
        rejected.append(reason)

    service = JoinService(Join(60.0), slots, Outlet(topic, reject), clock=lambda: 1000.0)
    await service.handle_prediction(prediction_record())
    await _handle_safely(service.handle_feedback, reject, feedback_record())

    assert rejected == []  # not dead-lettered as poison
    assert topic.sent == [b"m"]  # emitted once the broker took it
    assert slots["p-1"].state is SlotState.JOINED
    again = await service.handle_feedback(feedback_record())  # a redelivery now is a duplicate
    assert again is not None and again.kind is JoinOutcomeKind.DUPLICATE


async def test_the_emitted_example_carries_the_prediction_traceparent() -> None:
    topic = FlakyExamplesTopic(failures=0)

    async def reject(record: IncomingRecord, reason: str) -> None:
        raise AssertionError(reason)

    service = JoinService(Join(60.0), {}, Outlet(topic, reject), clock=lambda: 1000.0)
    await service.handle_feedback(feedback_record(headers=FEEDBACK_TRACE))
    await service.handle_prediction(prediction_record(headers=PREDICTION_TRACE))
    await service.handle_prediction(prediction_record(pid="p-2"))
    await service.handle_feedback(feedback_record(pid="p-2"))

    traced, untraced = topic.headers
    assert header(traced, "content-type") == protobuf_header()[1]
    assert header(traced, "traceparent") == PREDICTION_TRACE[0][1]
    assert header(traced, "tracestate") is None  # the prediction's trace has no tracestate
    assert untraced == [protobuf_header()]  # no trace on either side: none invented
