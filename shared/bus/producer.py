"""A non-blocking, buffered event producer that rides out broker outages.

``publish`` encodes the event, adds ``content-type`` and W3C trace headers, and
puts it in a bounded in-memory buffer; a background task sends the buffer in
batches and retries with capped backoff while the broker is unreachable. Every
event is either acknowledged (``published``), refused at once because the
buffer is full (``publish`` raises ResourceExhausted, counted in
``dropped_buffer_full``), or given up on and logged (``failed``: a
non-retriable error, or still buffered when ``stop``'s grace ran out). Nothing
is dropped silently.

Delivery is at least once: a request that timed out may have reached the broker,
so a retry can duplicate it; consumers de-duplicate on event ids. Order per key
is kept except where a batch partly failed and its failed part is re-sent.

Tansu does not implement InitProducerId, so the idempotent producer is off.
Call ``publish`` from the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)
from aiokafka.structs import RecordMetadata
from google.protobuf.message import Message

from headwater.shared.bus import metrics
from headwater.shared.bus.codec import Header, encode_event, protobuf_header
from headwater.shared.bus.connection import ProducerConnection
from headwater.shared.bus.topics import Topic
from headwater.shared.bus.tracing import TRACE_HEADERS, inject_trace_headers
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.retry import Backoff
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
Key = str | bytes | None


@dataclass(frozen=True)
class OutgoingRecord:
    """One encoded record on its way to the broker."""

    topic: Topic
    key: bytes | None
    value: bytes
    headers: tuple[Header, ...] = field(default_factory=tuple)


def _retriable(err: BaseException) -> bool:
    if isinstance(err, KafkaTimeoutError | KafkaConnectionError | OSError | TimeoutError):
        return True
    return isinstance(err, KafkaError) and bool(err.retriable)


def _outcome(sent: asyncio.Future[RecordMetadata] | BaseException) -> BaseException | None:
    if isinstance(sent, BaseException):
        return sent
    if sent.cancelled():
        return Unavailable("send cancelled")  # retried
    return sent.exception()


def _key_bytes(key: Key) -> bytes | None:
    return key.encode() if isinstance(key, str) else key


class EventProducer:
    """Publishes protobuf events to headwater topics (see the module docstring).

    Args:
        kafka: Broker, prefix, linger, request timeout and buffer size.
        client_id: Names this producer on the broker and in metrics.
        max_batch_events: Most buffered events sent in one round.
        max_retry_backoff_s: Cap of the exponential backoff between retries.
        max_request_size: Largest request aiokafka sends, in bytes.
        create_topics: Create the headwater topics on connecting (see
            :class:`~headwater.shared.bus.connection.ProducerConnection`).

    Attributes:
        published: Events the broker acknowledged.
        retried: Event sends retried.
        dropped_buffer_full: Events refused because the buffer was full.
        failed: Events given up on (logged with the reason).

    """

    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        *,
        max_batch_events: int = 1000,
        max_retry_backoff_s: float = 2.0,
        max_request_size: int = 1_048_576,
        create_topics: bool = True,
    ) -> None:
        self.kafka = kafka
        self.client_id = client_id
        self.published = 0
        self.retried = 0
        self.dropped_buffer_full = 0
        self.failed = 0
        self._max_batch = max_batch_events
        self._retry_backoff = Backoff(initial_s=0.1, max_s=max_retry_backoff_s, jitter=0.5)
        self._max_request_size = max_request_size
        self._connection = ProducerConnection(
            kafka, client_id, max_request_size=max_request_size, create_topics=create_topics
        )
        self._queue: asyncio.Queue[OutgoingRecord] = asyncio.Queue(kafka.producer_buffer_max_events)
        self._inflight: list[OutgoingRecord] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        self._gauge = metrics.BUFFERED_EVENTS.labels(client_id=client_id)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Connect (bounded by the request timeout) and start the sending task.

        A broker that is down does not fail the start: events are buffered and
        the connection is retried in the background.
        """
        self._closing = False
        try:
            await self._connection.get()
        except Unavailable as err:
            log.warning("broker unreachable at start; buffering", extra={"error": str(err)})
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"{self.client_id}-drain")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Refuse new events, send what is buffered within ``grace_s``, then close.

        Events still unsent after the grace are counted as failed and logged.
        """
        self._closing = True
        if self._drainer is not None:
            try:
                async with asyncio.timeout(grace_s):
                    await self._queue.join()
            except TimeoutError:
                pass
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)
            self._drainer = None
        self._fail_leftovers()
        await self._connection.close(timeout_s=max(1.0, grace_s))

    async def flush(self, timeout_s: float) -> None:
        """Wait until every event buffered so far is delivered or given up on.

        Raises:
            Unavailable: Events are still buffered after ``timeout_s``.

        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            raise Unavailable(
                f"{self.buffered} events of {self.client_id} still buffered after {timeout_s}s"
            ) from None

    def _fail_leftovers(self) -> None:
        leftovers = list(self._inflight)
        self._inflight = []
        while not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for record in leftovers:
            self._count_failed(record, "producer stopped before delivery")
        if leftovers:
            log.error("events not delivered before stop", extra={"count": len(leftovers)})
        self._gauge.set(0)

    # -- publishing -----------------------------------------------------------

    @property
    def max_request_size(self) -> int:
        """Largest request this producer sends, in bytes (a larger record is refused)."""
        return self._max_request_size

    @property
    def buffered(self) -> int:
        """Events waiting to be sent (in the buffer or in the current round)."""
        return self._queue.qsize() + len(self._inflight)

    def publish(
        self,
        topic: Topic,
        key: str | bytes | None,
        message: Message,
        headers: Headers | None = None,
    ) -> None:
        """Buffer one protobuf event for sending; never blocks.

        Raises:
            ResourceExhausted: The buffer is full (``dropped_buffer_full`` counts it).
            Unavailable: The producer is stopping.

        """
        self.publish_raw(topic, _key_bytes(key), encode_event(message), self._headers(headers))

    def publish_raw(
        self, topic: Topic, key: bytes | None, value: bytes, headers: Headers | None = None
    ) -> None:
        """Buffer pre-encoded bytes with exactly ``headers`` (no content-type or trace added)."""
        if self._closing:
            raise Unavailable(f"producer {self.client_id} is stopping")
        record = OutgoingRecord(Topic(topic), key, value, tuple(headers or ()))
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped_buffer_full += 1
            metrics.EVENTS_DROPPED_BUFFER_FULL.labels(topic=record.topic.value).inc()
            raise ResourceExhausted(
                f"event buffer of {self.client_id} is full "
                f"({self.kafka.producer_buffer_max_events} events): broker unreachable?"
            ) from None
        self._gauge.set(self.buffered)

    async def send_and_wait(
        self,
        topic: Topic,
        key: str | bytes | None,
        message: Message,
        headers: Headers | None = None,
    ) -> RecordMetadata:
        """Send one event now and wait for the broker's acknowledgement (unbuffered).

        Raises:
            Unavailable: Not acknowledged within the request timeout.

        """
        record = OutgoingRecord(
            Topic(topic), _key_bytes(key), encode_event(message), tuple(self._headers(headers))
        )
        return await self.send_raw_and_wait(record)

    async def send_raw_and_wait(self, record: OutgoingRecord) -> RecordMetadata:
        """Send pre-encoded bytes now and wait for the acknowledgement.

        Raises:
            Unavailable: Not acknowledged within the request timeout.
            ResourceExhausted: The record is larger than the broker accepts.

        """
        timeout_s = self.kafka.request_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                client = await self._connection.get()
                meta = await client.send_and_wait(
                    self.kafka.topic(record.topic.value),
                    record.value,
                    key=record.key,
                    headers=list(record.headers),
                )
        except MessageSizeTooLargeError as err:
            raise ResourceExhausted(f"event of {len(record.value)} bytes is too large") from err
        except (KafkaError, OSError, TimeoutError) as err:
            raise Unavailable(f"broker did not acknowledge within {timeout_s}s: {err!r}") from err
        self._count_published(record)
        return meta

    def _headers(self, extra: Headers | None) -> list[tuple[str, bytes]]:
        headers = [protobuf_header()]
        given = list(extra or ())
        if not any(name.lower() in TRACE_HEADERS for name, _ in given):
            headers += inject_trace_headers()
        return headers + given

    # -- the sending task -----------------------------------------------------

    async def _drain(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._inflight = batch
            settled = False
            try:
                await self._deliver(batch)
                settled = True
            except Exception:  # a bug must not silently stop all sending
                log.exception("producer send round crashed")
                for record in self._inflight:
                    self._count_failed(record, "internal error in the send round")
                settled = True
            finally:
                if settled:  # when cancelled by stop(), stop() counts _inflight as failed
                    self._inflight = []
                self._gauge.set(self.buffered)
                for _ in batch:
                    self._queue.task_done()

    async def _deliver(self, batch: list[OutgoingRecord]) -> None:
        pending = batch
        attempt = 0
        while pending:
            try:
                client = await self._connection.get()
                errors = await self._send_round(client, pending)
            except Unavailable as down:
                errors = [down] * len(pending)
            retry: list[OutgoingRecord] = []
            for record, error in zip(pending, errors, strict=True):
                if error is None:
                    self._count_published(record)
                elif _retriable(error) or isinstance(error, Unavailable):
                    retry.append(record)
                else:
                    self._count_failed(record, repr(error))
            if retry:
                await self._wait_to_retry(retry, attempt, errors)
                attempt += 1
            self._inflight = pending = retry

    async def _send_round(
        self, client: AIOKafkaProducer, records: list[OutgoingRecord]
    ) -> list[BaseException | None]:
        """Send every record; return per record None (acknowledged) or its error."""
        futures: list[asyncio.Future[RecordMetadata] | BaseException] = []
        for i, record in enumerate(records):
            try:
                futures.append(
                    await client.send(
                        self.kafka.topic(record.topic.value),
                        record.value,
                        key=record.key,
                        headers=list(record.headers),
                    )
                )
            except (KafkaError, OSError, TimeoutError) as err:
                # The client is not accepting sends: do not wait a timeout per record.
                futures.extend([err] * (len(records) - i))
                break
        waiting = [f for f in futures if isinstance(f, asyncio.Future)]
        await asyncio.gather(*waiting, return_exceptions=True)
        return [_outcome(f) for f in futures]

    async def _wait_to_retry(
        self, retry: list[OutgoingRecord], attempt: int, errors: list[BaseException | None]
    ) -> None:
        self.retried += len(retry)
        for record in retry:
            metrics.EVENTS_RETRIED.labels(topic=record.topic.value).inc()
        reason = next((repr(e) for e in errors if e is not None), "")
        delay = self._retry_backoff.delay_s(attempt)
        log.warning(
            "broker send failed; retrying",
            extra={"events": len(retry), "attempt": attempt + 1, "error": reason},
        )
        await asyncio.sleep(delay)

    # -- counting -------------------------------------------------------------

    def _count_published(self, record: OutgoingRecord) -> None:
        self.published += 1
        metrics.EVENTS_PUBLISHED.labels(topic=record.topic.value).inc()

    def _count_failed(self, record: OutgoingRecord, reason: str) -> None:
        self.failed += 1
        metrics.EVENTS_FAILED.labels(topic=record.topic.value).inc()
        log.error("event not delivered", extra={"topic": record.topic.value, "reason": reason})
