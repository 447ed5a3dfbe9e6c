"""RecordPolicy with an in-memory producer: what becomes of each kind of record."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from headwater.shared.bus.dead_letter import (
    MIN_VALUE_BYTES,
    REASON_HEADER,
    SOURCE_TOPIC_HEADER,
)
from headwater.shared.bus.record_policy import RecordPolicy
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import InvalidInput, Unavailable
from tests.fakes import FAST, FakeProducer


def raw(headers: object = (("trace", b"t"), ("flag", None)), value: bytes = b"v") -> ConsumerRecord:
    return ConsumerRecord("hw.feedback", 2, 7, 0, 0, b"k", value, None, 1, 1, headers)


def policy(producer: FakeProducer, **kwargs: object) -> RecordPolicy:
    return RecordPolicy(producer, "trainer", **kwargs)  # type: ignore[arg-type]


async def test_a_good_record_reaches_the_step_as_a_consumed_record() -> None:
    producer = FakeProducer()
    seen: list[ConsumedRecord] = []

    async def step(record: ConsumedRecord) -> None:
        seen.append(record)

    rules = policy(producer)
    await rules.handle(raw(), step)
    assert seen == [ConsumedRecord.of(raw())]
    assert (rules.rejected, rules.failed, producer.sent) == (0, 0, [])


async def test_invalid_input_is_dead_lettered_with_its_reason_and_the_original_bytes() -> None:
    producer = FakeProducer()
    counted: list[ConsumedRecord] = []

    async def step(record: ConsumedRecord) -> None:
        raise InvalidInput("FeedbackEvent has no label")

    rules = policy(producer, on_reject=counted.append)
    await rules.handle(raw(), step)
    [letter] = producer.sent
    assert letter.topic is Topic.DEAD_LETTER
    assert (letter.key, letter.value) == (b"k", b"v")
    assert letter.headers == (
        (REASON_HEADER, b"FeedbackEvent has no label"),
        (SOURCE_TOPIC_HEADER, b"hw.feedback"),
        ("trace", b"t"),
        ("flag", None),
    )
    assert counted == [ConsumedRecord.of(raw())]
    assert (rules.rejected, rules.failed) == (1, 0)


async def test_a_bug_is_logged_and_dead_lettered_as_the_consumer_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer()

    async def step(record: ConsumedRecord) -> None:
        raise ZeroDivisionError("bug")

    await policy(producer).handle(raw(), step)
    [letter] = producer.sent
    assert dict(letter.headers)[REASON_HEADER] == b"trainer failed: ZeroDivisionError"
    assert "record handling failed" in caplog.text and "ZeroDivisionError: bug" in caplog.text


async def test_unreadable_headers_are_dead_lettered_without_them() -> None:
    producer = FakeProducer()
    reached: list[ConsumedRecord] = []

    async def step(record: ConsumedRecord) -> None:
        reached.append(record)

    await policy(producer).handle(raw(headers=[("a", "text")]), step)
    [letter] = producer.sent
    headers = dict(letter.headers)
    assert headers[REASON_HEADER].startswith(b"unreadable record headers: TypeError: ")
    assert set(headers) == {REASON_HEADER, SOURCE_TOPIC_HEADER}
    assert (letter.key, letter.value, reached) == (b"k", b"v", [])


async def test_unavailable_goes_to_the_caller_when_there_is_no_retry() -> None:
    producer = FakeProducer()

    async def step(record: ConsumedRecord) -> None:
        raise Unavailable("registry down")

    rules = policy(producer)
    with pytest.raises(Unavailable):  # the caller seeks back: nothing committed, nothing lost
        await rules.handle(raw(), step)
    assert (rules.rejected, producer.sent) == (0, [])


async def test_with_a_retry_unavailable_is_waited_out_in_place() -> None:
    producer = FakeProducer()
    calls: list[int] = []

    async def step(record: ConsumedRecord) -> None:
        calls.append(record.offset)
        if len(calls) < 3:
            raise Unavailable("broker down")

    await policy(producer, retry=FAST).handle(raw(), step)
    assert calls == [7, 7, 7] and producer.sent == []


async def test_a_retry_ends_with_unavailable_once_the_service_stops() -> None:
    producer = FakeProducer()
    stopping = False

    async def step(record: ConsumedRecord) -> None:
        nonlocal stopping
        stopping = True  # the service began to stop during the attempt
        raise Unavailable("broker down")

    with pytest.raises(Unavailable):
        await policy(producer, retry=FAST, stopping=lambda: stopping).handle(raw(), step)


async def test_a_dead_letter_outage_is_retried_until_acknowledged() -> None:
    producer = FakeProducer(outages=2)

    async def step(record: ConsumedRecord) -> None:
        raise InvalidInput("bad")

    rules = policy(producer)
    await rules.handle(raw(), step)
    assert (len(producer.sent), producer.outages, rules.failed) == (1, 0, 0)


async def test_a_stopping_service_does_not_commit_past_a_record_it_could_not_dead_letter() -> None:
    producer = FakeProducer(outages=1_000)

    async def step(record: ConsumedRecord) -> None:
        raise InvalidInput("bad")

    rules = policy(producer, stopping=lambda: True)
    with pytest.raises(Unavailable):
        await rules.handle(raw(), step)
    assert (rules.rejected, rules.failed, producer.sent) == (1, 1, [])


async def test_a_record_refused_even_truncated_is_counted_and_does_not_raise() -> None:
    producer = FakeProducer(too_large=True)

    async def step(record: ConsumedRecord) -> None:
        raise InvalidInput("bad")

    rules = policy(producer)
    await rules.handle(raw(value=b"x" * (4 * MIN_VALUE_BYTES)), step)
    assert (rules.rejected, rules.failed, producer.sent) == (1, 1, [])
