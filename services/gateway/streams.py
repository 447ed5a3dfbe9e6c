"""The gateway's consumers: registry-events (hot swaps) and model-updates (live mode).

Every gateway replica must see every event, so neither consumer joins a group:
each is assigned every partition of its topic and keeps its position in memory.

- registry-events is read from the end offsets taken *before* the gateway lists
  the registry's deployments, so a change committed after that snapshot arrives
  as an event, and one in both is applied once (deployments are revisioned).
- model-updates is compacted (the latest update per model), so it is read from
  the beginning; :attr:`AssignedStream.caught_up` is set once the offsets that
  existed when it opened are consumed.

Every record goes through one :class:`RecordPolicy`: a record that cannot be
decoded or makes no sense goes to ``dead-letter`` with the reason, one that
hits a bug as ``gateway failed: <ExceptionType>`` (dead letters are retried
with capped backoff until the broker acknowledges them or the gateway stops; a
value too large to send is cut to a prefix marked ``x-dead-letter-truncated``),
and the consumer keeps going: a record that cannot be dead-lettered is logged
and never aborts its batch (the gateway commits no offsets, so there is no
position to hold back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from headwater.services.gateway import metrics
from headwater.services.gateway.live_updates import LiveUpdater, OnRefused
from headwater.services.gateway.loader import ModelLoader
from headwater.services.gateway.model_cache import ModelCache
from headwater.shared.bus.consumer import fetch_batch, make_consumer
from headwater.shared.bus.record_policy import RecordPolicy, Step
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)

Kind = events_pb2.RegistryEventKind
Handler = Callable[[list[ConsumerRecord]], Awaitable[None]]
_POLL_MS = 200


class AssignedStream:
    """A group-less consumer of every partition of one topic, feeding a handler.

    Args:
        kafka: Broker settings.
        topic: The logical topic.
        client_id: Names the consumer on the broker.
        handler: Called with each non-empty batch of records, in offset order per partition.
        from_beginning: Start at the earliest offsets (else at the end).

    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: Topic,
        client_id: str,
        handler: Handler,
        from_beginning: bool,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.client_id = client_id
        self.handler = handler
        self.from_beginning = from_beginning
        self.caught_up = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: dict[TopicPartition, int] = {}

    async def open(self) -> None:
        """Connect, assign every partition and set the start positions.

        Raises:
            Unavailable: The broker did not answer within the request timeout.

        """
        consumer = make_consumer(self.kafka, [], None, self.client_id)
        name = self.kafka.topic(self.topic.value)
        try:
            async with asyncio.timeout(2 * self.kafka.request_timeout_ms / 1000):
                await consumer.start()
                await consumer.topics()  # refresh metadata
                partitions = sorted(consumer.partitions_for_topic(name) or ())
                if not partitions:
                    raise Unavailable(f"topic {name!r} has no partitions (not created?)")
                assigned = [TopicPartition(name, p) for p in partitions]
                consumer.assign(assigned)
                self._ends = await consumer.end_offsets(assigned)
                if self.from_beginning:
                    await consumer.seek_to_beginning(*assigned)
                else:
                    for tp, end in self._ends.items():
                        consumer.seek(tp, end)
        except (KafkaError, OSError, TimeoutError, Unavailable) as error:
            await _stop_quietly(consumer)
            raise Unavailable(f"cannot consume {name!r}: {error!r}") from error
        self._consumer = consumer

    async def run(self) -> None:
        """Consume until cancelled; a failing batch is logged and the loop goes on."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("open() the stream first")
        while True:
            await self._check_caught_up(consumer)
            batches = await fetch_batch(
                consumer, _POLL_MS, self.topic.value, retry_s=_POLL_MS / 1000
            )
            records = [r for part in batches.values() for r in part]
            if records:
                try:
                    await self.handler(records)
                except Exception:
                    log.exception("batch handling failed", extra={"topic": self.topic.value})

    async def _check_caught_up(self, consumer: AIOKafkaConsumer) -> None:
        if self.caught_up.is_set():
            return
        for tp, end in self._ends.items():
            if await consumer.position(tp) < end:
                return
        self.caught_up.set()

    async def close(self) -> None:
        """Stop the consumer."""
        if self._consumer is not None:
            await _stop_quietly(self._consumer)
            self._consumer = None


async def _stop_quietly(consumer: AIOKafkaConsumer) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(consumer.stop(), timeout=5)


async def _handle_each(policy: RecordPolicy, records: list[ConsumerRecord], step: Step) -> None:
    """Every record through ``policy``; one that could not be dead-lettered is skipped."""
    for record in records:
        with contextlib.suppress(Unavailable):  # the gateway is stopping; logged and counted
            await policy.handle(record, step)


class RegistryEventHandler:
    """Applies RegistryEvents: deployments are (re)loaded, new models become known."""

    def __init__(self, cache: ModelCache, loader: ModelLoader, policy: RecordPolicy) -> None:
        self.cache = cache
        self.loader = loader
        self.policy = policy

    async def __call__(self, records: list[ConsumerRecord]) -> None:
        """Handle one batch."""
        await _handle_each(self.policy, records, self._apply_record)

    async def _apply_record(self, record: ConsumedRecord) -> None:
        self.apply(record.decode(events_pb2.RegistryEvent))

    def apply(self, event: events_pb2.RegistryEvent) -> None:
        """Apply one event.

        Raises:
            InvalidInput: The event has no kind, no model, or a deployment change without one.

        """
        model = event.model or event.deployment.model
        if not model:
            raise InvalidInput("RegistryEvent names no model")
        if event.kind == Kind.REGISTRY_EVENT_KIND_UNSPECIFIED:
            raise InvalidInput(f"RegistryEvent for '{model}' has no kind")
        self.cache.know(model)
        if event.kind == Kind.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED:
            if not event.HasField("deployment"):
                raise InvalidInput(f"DEPLOYMENT_CHANGED event for '{model}' has no deployment")
            deployment = registry_pb2.Deployment()
            deployment.CopyFrom(event.deployment)
            deployment.model = deployment.model or model
            self.loader.submit(deployment)
        kind = Kind.Name(event.kind) if event.kind in Kind.values() else str(event.kind)
        metrics.REGISTRY_EVENTS.labels(kind=kind).inc()


class ModelUpdateHandler:
    """Offers ModelUpdates to the live updater, newest per model and base version first."""

    def __init__(self, updater: LiveUpdater, policy: RecordPolicy) -> None:
        self.updater = updater
        self.policy = policy

    async def __call__(self, records: list[ConsumerRecord]) -> None:
        """Handle one batch: decode, then offer every update, the newest first.

        Each update is verified on its own (a forged one must not hide a genuine
        one) and dead-lettered through the policy if it does not verify; offered
        newest first, the older ones of a model are then stale and never unpickled.
        """
        decoded: list[tuple[ConsumedRecord, events_pb2.ModelUpdate]] = []

        async def decode(record: ConsumedRecord) -> None:
            decoded.append((record, _valid_update(record.decode(events_pb2.ModelUpdate))))

        # a tombstone of the compacted topic is no update and no error
        await _handle_each(self.policy, [r for r in records if r.value is not None], decode)
        decoded.sort(key=lambda pair: -pair[1].sequence)
        for record, update in decoded:
            try:
                on_refused = _dead_letter_refused(self.policy, record)
                outcome = await self.updater.offer(update, on_refused)
            except Exception:  # a bug with one update must not starve the others
                log.exception("live update failed", extra={"model": update.model})
                continue
            metrics.LIVE_UPDATES.labels(model=update.model, outcome=outcome.value).inc()


def _dead_letter_refused(policy: RecordPolicy, record: ConsumedRecord) -> OnRefused:
    """What dead-letters ``record`` when its update is refused (never raises, like a step)."""

    async def dead_letter(reason: str) -> None:
        with contextlib.suppress(Unavailable):  # the gateway is stopping; logged and counted
            await policy.reject(record, reason)

    return dead_letter


def _valid_update(update: events_pb2.ModelUpdate) -> events_pb2.ModelUpdate:
    """Check the fields a ModelUpdate cannot do without.

    >>> _valid_update(events_pb2.ModelUpdate(model="m", base_version=1, sequence=1))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: ModelUpdate for 'm' has no state
    """
    if not update.model:
        raise InvalidInput("ModelUpdate names no model")
    if update.base_version < 1 or update.sequence < 1:
        raise InvalidInput(
            f"ModelUpdate for '{update.model}' needs base_version >= 1 and sequence >= 1, "
            f"got {update.base_version} and {update.sequence}"
        )
    if not update.state or not update.signature:
        missing = "state" if not update.state else "signature"
        raise InvalidInput(f"ModelUpdate for '{update.model}' has no {missing}")
    return update
