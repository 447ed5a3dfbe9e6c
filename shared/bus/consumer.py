"""aiokafka consumers with headwater's settings: manual commits, after processing.

A group consumer (:func:`make_consumer` with a group) reads a batch, hands
every record to a :class:`~headwater.shared.bus.record_policy.RecordPolicy`
(which processes or dead-letters it), then commits the offsets after the
records it finished: a crash re-delivers what was not processed (at least
once) and never skips a record. The trainer's learners commit this way, by
partition, no further than what their saved state covers.

A reader that needs every partition and no group (a cache of a whole topic, a
test) uses :func:`assign_all_partitions` instead: no group join (seconds on
Tansu), positions set before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from headwater.shared.bus.codec import decode_event
from headwater.shared.bus.topics import Topic, topic_name
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)


def make_consumer(
    kafka: KafkaSettings,
    topics: Iterable[Topic],
    group_id: str | None,
    client_id: str,
    *,
    from_beginning: bool = True,
    max_poll_records: int = 500,
    session_timeout_ms: int = 10_000,
    listener: ConsumerRebalanceListener | None = None,
) -> AIOKafkaConsumer:
    """A consumer subscribed to ``topics`` (not started) with auto-commit off.

    Its timeouts follow the session timeout as the Faust apps' do (see
    :func:`~headwater.shared.bus.faust_app.faust_app`): a heartbeat every tenth
    of it, requests allowed 5 s more than it.

    Args:
        kafka: Broker address, prefix and request timeout.
        topics: Logical topics to subscribe to.
        group_id: Consumer group; None for a group-less consumer (assign partitions yourself).
        client_id: Names the consumer on the broker.
        from_beginning: Where a group without committed offsets starts.
        max_poll_records: Most records one ``getmany`` returns.
        session_timeout_ms: How long the group waits for a silent member (and for a
            rebalance).
        listener: Told of partitions assigned and revoked (a group consumer only).

    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        request_timeout_ms=max(kafka.request_timeout_ms, session_timeout_ms + 5_000),
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(100, session_timeout_ms // 10),
        max_poll_records=max_poll_records,
    )
    names = [topic_name(kafka, t) for t in topics]
    if group_id is not None and names:
        consumer.subscribe(names, listener=listener)
    return consumer


@dataclass(frozen=True)
class AssignedConsumer:
    """A started group-less consumer and what it was assigned.

    Attributes:
        consumer: Started, every partition assigned, positions set; stop it when done.
        partitions: Every assigned partition, by topic then partition number.
        end_offsets: Each partition's end offset when it was assigned.

    """

    consumer: AIOKafkaConsumer
    partitions: tuple[TopicPartition, ...]
    end_offsets: Mapping[TopicPartition, int]


async def assign_all_partitions(
    kafka: KafkaSettings,
    topics: Iterable[Topic],
    from_beginning: bool,
    *,
    client_id: str = "headwater-reader",
    max_poll_records: int = 500,
    timeout_s: float | None = None,
) -> AssignedConsumer:
    """Start a group-less consumer assigned every partition of ``topics``.

    Public aiokafka API only: the partitions come from the admin client's
    metadata of all topics (asking for a topic by name would make Tansu create
    a missing one with its default partition count).

    Args:
        kafka: Broker address, prefix and request timeout.
        topics: Logical topics to read; each must exist.
        from_beginning: Start at each partition's beginning; else at its end
            offset now (records written after this returns are read).
        client_id: Names the consumer on the broker.
        max_poll_records: Most records one ``getmany`` returns.
        timeout_s: Deadline of the whole call; twice the request timeout when None.

    Returns:
        The started consumer with its partitions and their end offsets.

    Raises:
        Unavailable: The broker did not answer in time, or a topic does not exist.

    """
    names = [topic_name(kafka, t) for t in topics]
    deadline_s = timeout_s if timeout_s is not None else 2 * kafka.request_timeout_ms / 1000
    consumer = make_consumer(
        kafka,
        [],
        None,
        client_id,
        from_beginning=from_beginning,
        max_poll_records=max_poll_records,
    )
    try:
        async with asyncio.timeout(deadline_s):
            partitions = await partitions_of(kafka, names)
            await consumer.start()
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions) if from_beginning else ends
            for tp in partitions:
                consumer.seek(tp, starts[tp])
    except BaseException as err:
        with contextlib.suppress(KafkaError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await consumer.stop()
        if isinstance(err, KafkaError | OSError | TimeoutError):
            raise Unavailable(f"cannot read {names} within {deadline_s}s: {err!r}") from err
        raise
    return AssignedConsumer(consumer, tuple(partitions), dict(ends))


async def partitions_of(kafka: KafkaSettings, names: Sequence[str]) -> list[TopicPartition]:
    """Every partition of the broker-side topics ``names`` (none is created).

    Raises:
        Unavailable: A topic does not exist (or has no partitions yet).
        KafkaError: The broker did not answer.

    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        client_id="headwater-admin",
        request_timeout_ms=kafka.request_timeout_ms,
    )
    try:
        await admin.start()
        described = await admin.describe_topics()  # all of them: never auto-creates
    finally:
        await admin.close()
    found = {
        t["topic"]: sorted(p["partition"] for p in t.get("partitions", []))
        for t in described
        if t.get("error_code", 0) == 0
    }
    missing = [name for name in names if not found.get(name)]
    if missing:
        raise Unavailable(f"topics {missing} do not exist on {kafka.bootstrap} (not created?)")
    return [TopicPartition(name, p) for name in names for p in found[name]]


Batch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


async def stop_reading(task: asyncio.Task[None] | None, consumer: AIOKafkaConsumer | None) -> None:
    """Stop a background reader: cancel its loop task and wait for it, then stop its consumer.

    Either may be None (never started, or already stopped).
    """
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if consumer is not None:
        await consumer.stop()


async def fetch_batch(
    consumer: AIOKafkaConsumer, timeout_ms: int, what: str, retry_s: float = 0.5
) -> Batch:
    """One ``getmany`` of a consumer loop; a failed fetch is logged, waited out, and empty.

    Every long-running loop reads this way, so a broker hiccup never ends the loop.
    """
    try:
        return await consumer.getmany(timeout_ms=timeout_ms)
    except KafkaError as err:
        log.warning("fetch failed", extra={"reading": what, "error": repr(err)})
        await asyncio.sleep(retry_s)
        return {}


async def follow_registry_events(
    consumer: AIOKafkaConsumer, on_event: Callable[[events_pb2.RegistryEvent], None]
) -> None:
    """Hand every ``RegistryEvent`` ``consumer`` reads to ``on_event``, until cancelled.

    The tail of a service that only reacts to registry changes (the trainer's
    learners, the monitor's rollout controller): an unreadable event is logged
    and skipped, since the registry, not this reader, owns the topic.
    """
    while True:
        batch = await fetch_batch(consumer, 500, "registry-events")
        for records in batch.values():
            for record in records:
                try:
                    event = decode_event(events_pb2.RegistryEvent, record.value, record.headers)
                except InvalidInput as err:
                    log.warning("unreadable registry event", extra={"error": str(err)})
                    continue
                on_event(event)
