"""The examples loop's records through its RecordPolicy: bugs, and a rebalance mid-outage."""

from __future__ import annotations

import asyncio

from aiokafka.structs import RecordMetadata, TopicPartition

from headwater.services.trainer.learn.consumer import LearningLoop
from headwater.services.trainer.learn.pool import LearnerPool
from headwater.shared.bus.dead_letter import REASON_HEADER
from headwater.shared.bus.producer import OutgoingRecord
from headwater.shared.errors import Unavailable
from tests.fakes import FakeProducer
from tests.unit.trainer.learn.conftest import TOPIC, FakeRegistry, make_pool, record

PARTITION = TopicPartition(TOPIC, 0)


class DownDeadLetters:
    """A producer whose dead-letter topic is unreachable; ``tried`` is set at the first send."""

    max_request_size = 1_048_576

    def __init__(self) -> None:
        self.tried = asyncio.Event()

    async def send_raw_and_wait(self, record: OutgoingRecord) -> RecordMetadata:
        self.tried.set()
        raise Unavailable("dead-letter topic unreachable")


class SeekingConsumer:
    """The part of the consumer the loop uses while learning a batch: seeking back."""

    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


def learning_loop(pool: LearnerPool, producer: object) -> LearningLoop:
    return LearningLoop(pool.settings, pool, producer, pool.index)  # type: ignore[arg-type]


async def test_a_record_that_hits_a_bug_is_dead_lettered_and_the_loop_moves_past_it() -> None:
    pool = make_pool(FakeRegistry())

    async def buggy(record: object, reject: object) -> None:
        raise KeyError("oops")

    pool.process = buggy  # type: ignore[method-assign,assignment]
    producer = FakeProducer()
    consumer = SeekingConsumer()
    loop = learning_loop(pool, producer)

    assert await loop._learn(consumer, {PARTITION: [record(0)]}) is False  # type: ignore[arg-type]
    assert [dict(sent.headers)[REASON_HEADER] for sent in producer.sent] == [
        b"trainer failed: KeyError"
    ]
    assert consumer.seeks == [] and loop._processed == {(TOPIC, 0): 1}


async def test_a_rebalance_ends_a_dead_letter_outage_so_the_loop_lets_go_of_its_lock() -> None:
    pool = make_pool(FakeRegistry())  # nothing deployed: every example is dead-lettered
    producer = DownDeadLetters()
    consumer = SeekingConsumer()
    loop = learning_loop(pool, producer)

    async def learn_holding_the_lock() -> bool:
        async with loop._lock:
            return await loop._learn(consumer, {PARTITION: [record(0), record(1)]})  # type: ignore[arg-type]

    learning = asyncio.create_task(learn_holding_the_lock())
    await producer.tried.wait()  # the loop retries the dead letter, holding its lock
    await asyncio.wait_for(loop.revoked({(TOPIC, 0)}), timeout=5)

    assert await learning is True  # the partition is retried after the rebalance, if still ours
    assert consumer.seeks == [(PARTITION, 0)]  # sought back to the record, nothing committed
    assert loop._processed == {}
    assert not loop._policy.stopping()  # the next dead letter is retried until acknowledged
