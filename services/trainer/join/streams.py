"""The join's Faust app: agents on ``predictions`` and ``feedback``, one changelog-backed table.

Both topics are keyed by prediction id and have the same partition count, so a
prediction and its feedback meet in the same partition: the table of join
slots is partitioned like them and its changelog topic too, so a restarted (or
rebalanced) worker recovers exactly the slots of its partitions.

The app runs inside the trainer process (no ``faust worker``), built in the
running loop and stopped within a bounded grace. On Tansu it is configured so
that Faust never creates a topic itself: the trainer creates the changelog
topic (compacted, with the source topics' partition count) before the app
starts, because Faust's co-partitioning check compares their counts and Tansu
would otherwise auto-create it with its own default. No leader topic, no Faust
web server (the trainer serves its own HTTP), and one record per producer
batch (see ``join_producer_max_batch_bytes``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from headwater.services.trainer.join.service import IncomingRecord, JoinService
from headwater.services.trainer.join.slots import Join, Slot, TraceHeaders, decode_slot, encode_slot
from headwater.services.trainer.settings import JOIN_TABLE, TrainerSettings
from headwater.shared.bus.codec import encode_event, protobuf_header
from headwater.shared.bus.dead_letter import dead_letter
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic, ensure_topic, topic_name
from headwater.shared.bus.tracing import extract_trace_context, inject_trace_headers
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.faust_runner import FaustRunner, faust_brokers
from headwater.shared.pb import events_pb2

log = logging.getLogger(__name__)

#: Longest pause between two attempts at a record while the broker is unreachable.
MAX_RETRY_S = 5.0


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
    app = _faust_app(settings, partitions, data_dir)
    table = app.Table(JOIN_TABLE, key_type=str, value_type=bytes, partitions=partitions)
    slots = SlotTable(table)
    examples = app.topic(
        topic_name(settings.kafka, Topic.EXAMPLES), key_serializer="raw", value_serializer="raw"
    )
    service = JoinService(Join(settings.join_ttl_s), slots, BrokerOutlet(examples, producer))
    _add_agents(app, settings, service)

    @app.timer(settings.join_sweep_interval_s)
    async def sweep() -> None:
        for key, slot in list(service.sweep()):
            slots.expire(key, slot)

    return app, service


def _faust_app(settings: TrainerSettings, partitions: int, data_dir: Path) -> faust.App:
    """A Faust app that declares no topic, has no leader topic and no web server."""
    session_s = settings.session_timeout_s
    return faust.App(
        settings.group_id("join"),
        broker=faust_brokers(settings.kafka.bootstrap),
        datadir=str(data_dir),
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        topic_partitions=partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest" if settings.from_beginning else "latest",
        broker_session_timeout=session_s,
        broker_rebalance_timeout=session_s,
        broker_heartbeat_interval=max(0.1, session_s / 10),
        broker_request_timeout=max(session_s + 5, settings.kafka.request_timeout_ms / 1000),
        producer_acks=-1,
        producer_max_batch_size=settings.join_producer_max_batch_bytes,
    )


def _add_agents(app: faust.App, settings: TrainerSettings, service: JoinService) -> None:
    """One agent on ``predictions`` and one on ``feedback``, handing records to ``service``."""
    handlers = {
        Topic.PREDICTIONS: service.handle_prediction,
        Topic.FEEDBACK: service.handle_feedback,
    }
    for topic, handle in handlers.items():
        channel = app.topic(
            topic_name(settings.kafka, topic), key_serializer="raw", value_serializer="raw"
        )
        agent = _consume(handle, service.outlet.reject)
        app.agent(channel, name=f"{settings.app_id}.join.{topic.value}")(agent)


class BrokerOutlet:
    """The join's outlet on the broker: examples to ``examples``, dead letters to ``dead-letter``.

    Args:
        examples: The Faust topic ``examples``.
        producer: Writes dead letters.

    """

    def __init__(self, examples: Any, producer: EventProducer) -> None:
        self._examples = examples
        self._producer = producer

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

    async def reject(self, record: IncomingRecord, reason: str) -> None:
        """Dead-letter a record with the reason (its key, value and headers unchanged)."""
        await dead_letter(
            self._producer, record.key, record.value, reason, record.topic, record.headers
        )


def _consume(handle: Any, reject: Any) -> Any:
    async def consume(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await _handle_message(handle, reject, event.message)

    return consume


async def _handle_message(handle: Any, reject: Any, message: Any) -> None:
    """Handle one consumed message; nothing about it may stop the agent."""
    try:
        record = _record(message, _headers(message.headers))
    except Exception as err:  # headers no client should send: keep the bytes, say why
        log.exception("unreadable record headers", extra={"topic": message.topic})
        reason = f"unreadable record headers: {type(err).__name__}: {err}"

        async def dead_letter_it(record: IncomingRecord) -> None:
            await reject(record, reason)

        await _handle_safely(dead_letter_it, reject, _record(message, ()))
        return
    await _handle_safely(handle, reject, record)


def _record(message: Any, headers: tuple[tuple[str, bytes | None], ...]) -> IncomingRecord:
    return IncomingRecord(
        topic=message.topic,
        partition=message.partition,
        key=message.key,
        value=message.value,
        headers=headers,
    )


async def _handle_safely(handle: Any, reject: Any, record: IncomingRecord) -> None:
    """Handle a record; wait out broker outages, dead-letter a record that hits a bug."""
    delay_s, failed = 0.1, ""
    while True:
        try:
            await (reject(record, failed) if failed else handle(record))
            return
        except Unavailable as err:  # the dead-letter topic is unreachable: try again
            log.warning("join paused", extra={"error": str(err), "retry_in_s": delay_s})
        except Exception as err:
            log.exception("join failed on a record", extra={"topic": record.topic})
            if failed:
                return  # even dead-lettering fails: logged above, nothing else to do
            failed = f"trainer failed: {type(err).__name__}"
            continue
        await asyncio.sleep(delay_s)
        delay_s = min(2 * delay_s, MAX_RETRY_S)


def _headers(raw: Any) -> tuple[tuple[str, bytes | None], ...]:
    """Record headers as aiokafka gives them; a null value (``kcat -H name``) stays None.

    >>> _headers([("content-type", b"application/json"), ("flag", None)])
    (('content-type', b'application/json'), ('flag', None))

    Raises:
        TypeError: A header is not a (name, bytes or None) pair.

    """
    if not raw:
        return ()
    items = raw.items() if hasattr(raw, "items") else raw
    return tuple((str(k), None if v is None else bytes(v)) for k, v in items)


class JoinStreams:
    """Runs the join's Faust app inside this process: background start, bounded stop.

    Args:
        settings: Broker, app id, TTL and group timeouts.
        partitions: Partition count of ``predictions`` and ``feedback``.
        data_dir: Faust's working directory.
        producer: Writes dead letters.

    """

    def __init__(
        self, settings: TrainerSettings, partitions: int, data_dir: Path, producer: EventProducer
    ) -> None:
        self._settings = settings
        self._partitions = partitions
        self._data_dir = data_dir
        self._producer = producer
        self.service: JoinService | None = None
        self._runner = FaustRunner("the join")

    @property
    def ready(self) -> bool:
        """Whether the consumer group has joined, the table recovered and the agents consume."""
        return self._runner.ready

    async def start(self) -> None:
        """Create the changelog topic, build the app and start it in the background."""
        await ensure_changelog(self._settings, self._partitions)
        app, self.service = build_app(
            self._settings, self._partitions, self._data_dir, self._producer
        )
        self._runner.launch(app)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the app has started.

        Raises:
            Unavailable: It did not start within ``timeout_s`` or failed to start.

        """
        await self._runner.wait_ready(timeout_s)

    async def stop(self, grace_s: float) -> None:
        """Stop the agents (flushing table writes and examples) within ``grace_s``."""
        await self._runner.stop(grace_s)
