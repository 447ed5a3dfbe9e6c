"""The join's Faust app: agents on ``predictions`` and ``feedback``, one changelog-backed table.

Both topics are keyed by prediction id and have the same partition count, so a
prediction and its feedback meet in the same partition: the table of join
slots is partitioned like them and its changelog topic too, so a restarted (or
rebalanced) worker recovers exactly the slots of its partitions.

The app runs inside the trainer process (no ``faust worker``), built in the
running loop and stopped within a bounded grace. It is a
:func:`~headwater.shared.bus.faust_app.faust_app`, so Faust never creates a
topic itself: the trainer creates the changelog topic (compacted, with the
source topics' partition count) before the app starts, because Faust's
co-partitioning check compares their counts and Tansu would otherwise
auto-create it with its own default. One record per producer batch (see
``join_producer_max_batch_bytes``).

Every record goes through one :class:`~headwater.shared.bus.record_policy.RecordPolicy`
(:func:`join_policy`): a record that cannot be decoded or makes no sense is
dead-lettered with the reason, one that hits a bug as ``trainer failed:
<ExceptionType>``, and one that meets a broker outage (``examples`` or
``dead-letter`` unreachable) is tried again in place until it goes through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from headwater.services.trainer.join.pairing import Join
from headwater.services.trainer.join.service import JoinService
from headwater.services.trainer.join.slot_codec import decode_slot, encode_slot
from headwater.services.trainer.join.slots import Slot, TraceHeaders
from headwater.services.trainer.settings import JOIN_TABLE, TrainerSettings
from headwater.shared.bus.codec import encode_event, protobuf_header
from headwater.shared.bus.faust_app import faust_app
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.record_policy import RecordPolicy, Step
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.topics import Topic, ensure_topic, topic_name
from headwater.shared.bus.tracing import extract_trace_context, inject_trace_headers
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.faust_runner import FaustRunner
from headwater.shared.pb import events_pb2
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

#: Pauses between attempts at a record while the broker is unreachable (it is never skipped).
RETRY = Backoff(initial_s=0.1, max_s=5.0)


class SlotTable(MutableMapping[str, Slot]):
    """A Faust table of encoded slots seen as a mapping of :class:`Slot`.

    Writes go through the table (and so to its changelog, in the partition of
    the event being processed); :meth:`expire` deletes a slot from outside any
    event, sending the tombstone to the partition recorded in the slot.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def __getitem__(self, key: str) -> Slot:
        raw = self.table[key]
        try:
            return decode_slot(raw)
        except InvalidInput:
            log.error("unreadable join slot ignored", extra={"key": key})
            raise KeyError(key) from None

    def __setitem__(self, key: str, slot: Slot) -> None:
        self.table[key] = encode_slot(slot)

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.table.keys()))

    def __len__(self) -> int:
        return len(self.table)

    def expire(self, key: str, slot: Slot) -> None:
        """Delete ``key`` locally and in the changelog partition the slot lives in."""
        self.table.data.pop(key, None)
        self.table.send_changelog(slot.partition, key, None, value_serializer="raw")


async def ensure_changelog(settings: TrainerSettings, partitions: int) -> None:
    """Create the join table's changelog topic (compacted, ``partitions`` partitions).

    Raises:
        Unavailable: The broker did not answer in time.
        FailedPrecondition: The topic exists with another partition count (delete
            it, or change ``app_id``, so that it is created again).

    """
    await ensure_topic(
        settings.kafka,
        settings.join_changelog_topic(),
        partitions,
        {"cleanup.policy": "compact"},
    )


def build_app(
    settings: TrainerSettings, partitions: int, data_dir: Path, producer: EventProducer
) -> tuple[faust.App, JoinService]:
    """The Faust app with its table, two agents and the sweep timer (call inside the loop)."""
    app = faust_app(
        settings.group_id("join"),
        settings.kafka,
        data_dir,
        session_timeout_s=settings.session_timeout_s,
        from_beginning=settings.from_beginning,
        table_partitions=partitions,
        producer_max_batch_bytes=settings.join_producer_max_batch_bytes,
    )
    table = app.Table(JOIN_TABLE, key_type=str, value_type=bytes, partitions=partitions)
    slots = SlotTable(table)
    examples = app.topic(
        topic_name(settings.kafka, Topic.EXAMPLES), key_serializer="raw", value_serializer="raw"
    )
    policy = join_policy(producer)
    service = JoinService(Join(settings.join_ttl_s), slots, BrokerOutlet(examples, policy))
    _add_agents(app, settings, service, policy)

    @app.timer(settings.join_sweep_interval_s)
    async def sweep() -> None:
        for key, slot in list(service.sweep()):
            slots.expire(key, slot)

    return app, service


def join_policy(producer: EventProducer) -> RecordPolicy:
    """The agents' record policy: a record waits out broker outages (:data:`RETRY`), in place.

    A record that hits a bug is dead-lettered as ``trainer failed: <ExceptionType>``.
    No ``stopping``: stopping the app cancels an agent mid-retry, and the record,
    not committed, is read again after the restart.
    """
    return RecordPolicy(producer, "trainer", retry=RETRY)


def _add_agents(
    app: faust.App, settings: TrainerSettings, service: JoinService, policy: RecordPolicy
) -> None:
    """One agent on ``predictions`` and one on ``feedback``, each record through ``policy``."""
    handlers = {
        Topic.PREDICTIONS: service.handle_prediction,
        Topic.FEEDBACK: service.handle_feedback,
    }
    for topic, handle in handlers.items():
        channel = app.topic(
            topic_name(settings.kafka, topic), key_serializer="raw", value_serializer="raw"
        )
        agent = _agent(policy, handle)
        app.agent(channel, name=f"{settings.app_id}.join.{topic.value}")(agent)


class BrokerOutlet:
    """The join's outlet on the broker: examples to ``examples``, dead letters to ``dead-letter``.

    Args:
        examples: The Faust topic ``examples``.
        policy: The agents' record policy, which writes the dead letters.

    """

    def __init__(self, examples: Any, policy: RecordPolicy) -> None:
        self._examples = examples
        self._policy = policy

    async def emit(self, example: events_pb2.LabeledExample, trace: TraceHeaders) -> None:
        """Send an example, keyed by its model, continuing the trace of ``trace``.

        The example carries the trace context of ``trace`` (a valid
        ``traceparent`` and its ``tracestate``), none when there is none.

        Raises:
            Unavailable: The broker cannot take it. The agent then retries the
                record (nothing was written to the join table); a second emit of
                the same pair is a duplicate downstream.

        """
        headers = [protobuf_header(), *inject_trace_headers(extract_trace_context(trace))]
        try:
            await self._examples.send(
                key=example.model.encode(), value=encode_event(example), headers=headers
            )
        except (KafkaError, ProducerSendError) as err:
            raise Unavailable(f"example {example.example_id!r} not sent: {err!r}") from err

    async def reject(self, record: ConsumedRecord, reason: str) -> None:
        """Dead-letter a record with the reason (its key, value and headers unchanged).

        Through the agents' :class:`RecordPolicy`: retried until the broker
        acknowledges it, so the agent moves past the record only once it is safe.
        """
        await self._policy.reject(record, reason)


def _agent(policy: RecordPolicy, handle: Step) -> Any:
    """The agent that hands every message of its stream to ``handle`` through ``policy``."""

    async def consume(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await policy.handle(event.message, handle)

    return consume


class JoinStreams(FaustRunner):
    """The join's Faust app run inside this process: background start, bounded stop.

    Readiness (group joined, table recovered, agents consuming), the wait for it
    and the bounded stop (which flushes table writes and examples) are the
    :class:`FaustRunner`'s.

    Args:
        settings: Broker, app id, TTL and group timeouts.
        partitions: Partition count of ``predictions`` and ``feedback``.
        data_dir: Faust's working directory.
        producer: Writes dead letters.

    """

    def __init__(
        self, settings: TrainerSettings, partitions: int, data_dir: Path, producer: EventProducer
    ) -> None:
        super().__init__("the join")
        self._settings = settings
        self._partitions = partitions
        self._data_dir = data_dir
        self._producer = producer
        self.service: JoinService | None = None

    async def start(self) -> None:
        """Create the changelog topic, build the app and start it in the background."""
        await ensure_changelog(self._settings, self._partitions)
        app, self.service = build_app(
            self._settings, self._partitions, self._data_dir, self._producer
        )
        self.launch(app)
