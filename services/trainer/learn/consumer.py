"""The learners' Kafka side: consume ``examples`` in a group, publish updates, commit safely.

One loop task owns the learners (:class:`LearnerPool`, one per routed version of
each model): it reads a batch, applies deployment changes noted since the last
one, has every learner of a record's model learn it (or dead-letters it),
publishes the ModelUpdates that are due (at most one per learner every
``sync_interval_ms``, a retiring learner's last at once, keyed
``"{model}/{base_version}"``, the learners' in flight together), commits what
is saved, and starts checkpoints that are due. A rebalance saves and commits first,
then forgets the learners of the revoked partitions. The registry-events tail
feeds deployment changes to the pool.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from headwater.services.trainer.learn.active import TP
from headwater.services.trainer.learn.pool import LearnerPool
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.bus.consumer import (
    assign_all_partitions,
    fetch_batch,
    follow_registry_events,
    make_consumer,
    stop_reading,
)
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.record_policy import RecordPolicy
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.model_updates import update_key
from headwater.shared.pb import events_pb2

log = logging.getLogger(__name__)


class LearningLoop:
    """Consumes ``examples`` in the learners' consumer group and drives the pool.

    Args:
        settings: Group, cadences and timeouts.
        pool: The learners.
        producer: Publishes ModelUpdates and dead letters.
        index: The latest ModelUpdate per model (caught up before restoring).

    """

    def __init__(
        self,
        settings: TrainerSettings,
        pool: LearnerPool,
        producer: EventProducer,
        index: UpdateIndex,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self.index = index
        self.assigned = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._revoking = False
        # A dead letter is retried until acknowledged, but never past a stop or a
        # rebalance: the loop then seeks back and lets go of its lock.
        self._policy = RecordPolicy(
            producer, "trainer", stopping=lambda: self._stopping or self._revoking
        )
        self._processed: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    @property
    def ready(self) -> bool:
        """Whether the group has assigned this trainer its partitions and the loop runs."""
        return self.assigned.is_set() and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Join the group (in the background) and start the loop."""
        settings = self.settings
        consumer = make_consumer(
            settings.kafka,
            [Topic.EXAMPLES],
            settings.group_id("learners"),
            f"{settings.app_id}-learners",
            from_beginning=settings.from_beginning,
            max_poll_records=settings.max_poll_records,
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            listener=_Rebalance(self),
        )
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="trainer-learning")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        poll_ms = max(10, self.settings.sync_interval_ms)
        while not self._stopping:
            batch = await fetch_batch(
                consumer, poll_ms, "examples", retry_s=self.settings.registry_retry_s
            )
            async with self._lock:
                retry = await self._learn(consumer, batch)
                await self._sync()
                await self._commit(consumer)
                for learner in self.pool.due_checkpoints():
                    self.pool.start_checkpoint(learner.model, learner.version)
            if retry:
                await asyncio.sleep(self.settings.registry_retry_s)

    async def _learn(self, consumer: AIOKafkaConsumer, batch: dict) -> bool:
        """Learn a batch; False, or True when some partition must be retried.

        Every record goes through the loop's :class:`RecordPolicy`: one the pool
        cannot learn, or that hits a bug (``trainer failed: <ExceptionType>``), is
        dead-lettered; when the registry or the dead-letter topic is unreachable the
        partition is sought back to the record, to be retried after a pause.
        """
        self.pool.apply_deployments()
        retry = False
        for tp, records in batch.items():
            for record in records:
                try:
                    await self._policy.handle(record, self._learn_record)
                except Unavailable as err:
                    log.warning("examples paused", extra={"error": str(err), "partition": tp})
                    consumer.seek(tp, record.offset)
                    retry = True
                    break
                self._processed[(tp.topic, tp.partition)] = record.offset + 1
        return retry

    async def _learn_record(self, record: ConsumedRecord) -> None:
        await self.pool.process(record, self._policy.reject)

    async def _sync(self, force: bool = False) -> None:
        """Publish the due ModelUpdates; a learner counts as saved once its update is acknowledged.

        Each learner's goes under its own key, ``"{model}/{base_version}"``. The
        updates of several learners are in flight together (each learner has at
        most one), so a sync waits about one round trip, not one per learner.
        """
        due = self.pool.due_updates(force)
        updates = [await self.pool.build_update(learner) for learner in due]
        acknowledged = await asyncio.gather(*(self._publish(update) for update in updates))
        for learner, update, done in zip(due, updates, acknowledged, strict=True):
            if done:
                self.pool.saved(learner, update)

    async def _publish(self, update: events_pb2.ModelUpdate) -> bool:
        key = update_key(update.model, update.base_version)
        try:
            await self.producer.send_and_wait(Topic.MODEL_UPDATES, key, update)
        except (Unavailable, ResourceExhausted) as err:
            log.warning("model update not published", extra={"learner": key, "error": str(err)})
            return False
        return True

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        offsets = self.pool.commit_offsets(self._processed)
        changed = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
        if not changed:
            return
        try:
            await consumer.commit({TopicPartition(t, p): o for (t, p), o in changed.items()})
        except (CommitFailedError, KafkaError) as err:
            log.warning("commit failed", extra={"error": repr(err)})
            return
        self._committed.update(changed)

    async def revoked(self, partitions: set[TP]) -> None:
        """Save and commit, then forget the learners of revoked partitions.

        A dead letter the loop is retrying gives up first (the loop seeks back
        to its record), so an outage of the dead-letter topic cannot hold the
        lock through the rebalance.
        """
        self._revoking = True
        try:
            async with self._lock:
                if self._consumer is not None:
                    await self._sync(force=True)
                    await self._commit(self._consumer)
                for learner in self.pool.drop(partitions):
                    log.info("learner handed over", extra={"learner": str(learner)})
                for tp in partitions:
                    self._processed.pop(tp, None)
                    self._committed.pop(tp, None)
        finally:
            self._revoking = False

    async def stop(self, grace_s: float) -> None:
        """Finish the batch, save every learner, commit, leave the group; within ``grace_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self._stopping = True
        task, consumer = self._task, self._consumer
        self._task = None
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=max(0.1, grace_s / 2))
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if consumer is not None:
            try:
                async with asyncio.timeout(max(0.5, deadline - loop.time())):
                    async with self._lock:
                        await self._sync(force=True)
                        await self._commit(consumer)
            except TimeoutError:
                log.error("learners not saved within the grace")
            await self.pool.stop_checkpoints(max(0.1, deadline - loop.time()))
            self._consumer = None
            await consumer.stop()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: LearningLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._loop.index.caught_up(self._loop.settings.start_timeout_s)
        except Unavailable as err:
            log.error(
                "model-updates not caught up; restores may be stale", extra={"error": str(err)}
            )
        self._loop.assigned.set()


class RegistryEventsTail:
    """Reads ``registry-events`` from the end (no group) and hands them to the pool."""

    def __init__(self, settings: TrainerSettings, pool: LearnerPool) -> None:
        self._settings = settings
        self._pool = pool
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Assign every partition at its end and read in the background.

        Raises:
            Unavailable: The broker did not answer in time.

        """
        assigned = await assign_all_partitions(
            self._settings.kafka,
            [Topic.REGISTRY_EVENTS],
            from_beginning=False,
            client_id=f"{self._settings.app_id}-registry-events",
        )
        consumer = assigned.consumer
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="trainer-registry-events")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        await follow_registry_events(consumer, self._pool.on_registry_event)

    async def stop(self) -> None:
        """Stop reading."""
        task, consumer = self._task, self._consumer
        self._task = self._consumer = None
        await stop_reading(task, consumer)
