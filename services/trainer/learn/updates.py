"""Live-sync ModelUpdates: what a learner saves, and the index of the latest one per learner.

A ModelUpdate on the compacted ``model-updates`` topic is the learner's save
point: the model state (what gateways in live mode swap in), its base version,
sequence, the offsets it learned and the rest of its bookkeeping
(de-duplication ids, metric, consumed positions: :class:`Progress`, as the
embedded ``LearnerProgress``), all under one signature
(:mod:`headwater.shared.model_updates`). State and offsets are saved in one
write, and a restarted learner resumes from both. Each learner (one per
deployed version) writes under its own key, ``"{model}/{base_version}"``.

>>> from river import linear_model
>>> codec = ArtifactCodec("key")
>>> artifact = codec.encode(linear_model.LinearRegression())
>>> update = encode_update(
...     "m", artifact, Progress(base_version=2, examples_learned=5), 7, codec, now=10.0)
>>> update.base_version, update.sequence, update.examples_learned
(2, 7, 5)
>>> verify_update(codec, update)
>>> progress_from_update(update).examples_learned
5
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from headwater.services.trainer.learn.convert import offset_ranges, spans_from_ranges
from headwater.services.trainer.learn.learner import Position, Progress
from headwater.services.trainer.timestamps import seconds, timestamp
from headwater.shared.artifacts import ArtifactCodec, SignedArtifact
from headwater.shared.bus.consumer import assign_all_partitions, fetch_batch, stop_reading
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.record_policy import RecordPolicy
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import ArtifactIntegrityError, Unavailable
from headwater.shared.model_updates import check_update_key, sign_update, verify_update
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)


def progress_to_update(progress: Progress) -> events_pb2.ModelUpdate:
    """The fields of a ModelUpdate that save ``progress`` (model, sequence and state unset).

    >>> from headwater.services.trainer.learn.learner import OffsetSpan, id_digest
    >>> p = Progress(base_version=2, examples_learned=3, duplicates=1, scored=3,
    ...              score_total=2.0, window=(1.0, 0.0, 1.0), recent_ids=(id_digest("a"),),
    ...              offsets=(OffsetSpan("ex", 1, 4, 9),), positions=(Position("ex", 1, 9),),
    ...              newest_label_at=1.5)
    >>> progress_from_update(progress_to_update(p)) == p
    True
    """
    update = events_pb2.ModelUpdate(
        base_version=progress.base_version,
        offsets=offset_ranges(progress.offsets),
        examples_learned=progress.examples_learned,
        progress=events_pb2.LearnerProgress(
            duplicates=progress.duplicates,
            scored=progress.scored,
            score_total=progress.score_total,
            window=progress.window,
            recent_ids=progress.recent_ids,
            positions=[
                events_pb2.ConsumedPosition(topic=p.topic, partition=p.partition, offset=p.offset)
                for p in progress.positions
            ],
        ),
    )
    if progress.newest_label_at is not None:
        update.newest_label_at.CopyFrom(timestamp(progress.newest_label_at))
    return update


def progress_from_update(update: events_pb2.ModelUpdate) -> Progress:
    """The learner progress a (verified) ModelUpdate saved."""
    saved = update.progress
    return Progress(
        base_version=update.base_version,
        examples_learned=update.examples_learned,
        duplicates=saved.duplicates,
        scored=saved.scored,
        score_total=saved.score_total,
        window=tuple(saved.window),
        recent_ids=tuple(saved.recent_ids),
        offsets=spans_from_ranges(update.offsets),
        positions=tuple(Position(p.topic, p.partition, p.offset) for p in saved.positions),
        newest_label_at=seconds(update.newest_label_at),
    )


def encode_update(
    model: str,
    artifact: SignedArtifact,
    progress: Progress,
    sequence: int,
    codec: ArtifactCodec,
    now: float,
) -> events_pb2.ModelUpdate:
    """The signed ModelUpdate that saves a learner: its state (``artifact``) and ``progress``.

    Hashes and signs: call it off the event loop.
    """
    update = progress_to_update(progress)
    update.model = model
    update.sequence = sequence
    update.state = artifact.content
    update.sha256 = artifact.sha256
    update.published_at.CopyFrom(timestamp(now))
    return sign_update(codec, update)


@dataclass(frozen=True)
class SavedUpdate:
    """The latest verified ModelUpdate of a learner, with the progress it saved."""

    update: events_pb2.ModelUpdate
    progress: Progress


class UpdateIndex:
    """Reads ``model-updates`` from the beginning; keeps the latest update per learner.

    A learner is a ``(model, base_version)``, both read from the signed fields.
    Group-less: every trainer reads every partition (the topic is compacted and small).
    Every update read is verified (:func:`~headwater.shared.model_updates.verify_update`,
    in a worker thread) before any field of it is noted, and its record key checked
    against the signed model and base version; one that cannot be decoded, does not
    verify or is keyed for another learner is dead-lettered with the reason, so a
    forged update can neither be restored from, nor hide the genuine latest one,
    nor push up the sequences this trainer publishes.

    Args:
        kafka: Broker and topic prefix.
        client_id: Names the consumer on the broker.
        codec: Verifies updates (the platform's signing key).
        producer: Writes the dead letters.

    """

    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        codec: ArtifactCodec,
        producer: EventProducer,
    ) -> None:
        self._kafka = kafka
        self._client_id = client_id
        self._codec = codec
        self._policy = RecordPolicy(producer, "trainer")
        self._latest: dict[tuple[str, int], SavedUpdate] = {}
        self._sequences: dict[tuple[str, int], int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._moved = asyncio.Event()

    def latest(self, model: str, version: int | None = None) -> SavedUpdate | None:
        """The newest update of the learner of ``model`` on ``version`` read so far.

        ``version`` None: the one with the highest sequence among the model's learners.
        """
        if version is not None:
            return self._latest.get((model, version))
        saved = [s for (name, _), s in self._latest.items() if name == model]
        return max(saved, key=lambda s: s.update.sequence, default=None)

    def max_sequence(self, model: str, version: int | None = None) -> int:
        """The highest sequence an update of that learner carried (0 if none).

        ``version`` None: the highest of all the model's learners.
        """
        if version is not None:
            return self._sequences.get((model, version), 0)
        return max((n for (name, _), n in self._sequences.items() if name == model), default=0)

    def record(self, update: events_pb2.ModelUpdate) -> None:
        """Take note of a verified update (read from the topic, or just published).

        An update older than the latest one noted for its learner (a lower
        sequence: the topic read back after :meth:`LearnerPool.saved` noted a
        newer one) is ignored, so a restore never goes back to an older state.

        >>> index = UpdateIndex(
        ...     KafkaSettings(bootstrap="127.0.0.1:1"), "doc", ArtifactCodec("key"),
        ...     EventProducer(KafkaSettings(bootstrap="127.0.0.1:1"), "doc"))
        >>> index.record(events_pb2.ModelUpdate(model="m", base_version=1, sequence=5))
        >>> index.record(events_pb2.ModelUpdate(model="m", base_version=1, sequence=4))
        >>> index.record(events_pb2.ModelUpdate(model="m", base_version=2, sequence=3))
        >>> index.latest("m", 1).update.sequence, index.max_sequence("m", 2)
        (5, 3)
        >>> index.latest("m").update.base_version, index.max_sequence("m")
        (1, 5)
        """
        learner = (update.model, update.base_version)
        current = self._latest.get(learner)
        if current is None or update.sequence >= current.update.sequence:
            self._latest[learner] = SavedUpdate(update, progress_from_update(update))
        self._sequences[learner] = max(self._sequences.get(learner, 0), update.sequence)

    async def start(self) -> None:
        """Assign every partition from the beginning and read in the background.

        Raises:
            Unavailable: The broker did not answer in time.

        """
        assigned = await assign_all_partitions(
            self._kafka, [Topic.MODEL_UPDATES], from_beginning=True, client_id=self._client_id
        )
        consumer = assigned.consumer
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="trainer-update-index")

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await fetch_batch(consumer, 500, "model-updates")
            for tp, records in batch.items():
                for record in records:
                    await self.read(record)
                    self._positions[tp] = record.offset + 1
            self._moved.set()
            self._moved.clear()

    async def read(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Note one record of the topic if it verifies, else dead-letter it (never raises).

        The record goes through a :class:`RecordPolicy`, as every consumer's does:
        one that cannot be decoded, or hits a bug, is dead-lettered like one that
        does not verify (or is keyed for another learner), and the index reads on.
        """
        if record.value is None:
            return  # a tombstone of the compacted topic
        await self._policy.handle(record, self._note_verified)

    async def _note_verified(self, record: ConsumedRecord) -> None:
        update = record.decode(events_pb2.ModelUpdate)
        try:
            await asyncio.to_thread(verify_update, self._codec, update)
            check_update_key(record.key, update)
        except ArtifactIntegrityError as err:
            log.error("model update refused", extra={"offset": record.offset, "reason": str(err)})
            await self._policy.reject(record, str(err))
            return
        if update.model:
            self.record(update)

    async def caught_up(self, timeout_s: float) -> None:
        """Wait until every update published before the call has been read.

        Raises:
            Unavailable: Not caught up within ``timeout_s``.

        """
        consumer = self._consumer
        if consumer is None:
            raise Unavailable("the model-updates index was never started")
        try:
            async with asyncio.timeout(timeout_s):
                ends = await consumer.end_offsets(list(consumer.assignment()))
                while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
                    await self._moved.wait()
        except (TimeoutError, KafkaError) as err:
            raise Unavailable(f"model-updates not read to the end in {timeout_s}s") from err

    async def stop(self) -> None:
        """Stop reading."""
        task, consumer = self._task, self._consumer
        self._task = self._consumer = None
        await stop_reading(task, consumer)
