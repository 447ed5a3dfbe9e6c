"""Live-sync ModelUpdates: what a learner saves, and the index of the latest one per model.

A ModelUpdate on the compacted ``model-updates`` topic is the learner's save
point: the signed model state (what gateways in live mode swap in), its base
version, sequence and the offsets it learned. The learner's own bookkeeping
(de-duplication ids, metric, consumed positions: :class:`Progress`) travels in
the same record as a header, signed together with the state's digest, so state
and offsets are saved in one write and a restarted learner resumes from both.

>>> from river import linear_model
>>> from headwater.services.trainer.learn.learner import Progress
>>> codec = ArtifactCodec("key")
>>> artifact = codec.encode(linear_model.LinearRegression())
>>> update, headers = encode_update(
...     "m", artifact, Progress(base_version=2, examples_learned=5), 7, codec, now=10.0)
>>> update.base_version, update.sequence, update.examples_learned
(2, 7, 5)
>>> saved_progress(update, headers, codec).examples_learned
5
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from headwater.services.trainer.learn.convert import offset_ranges, spans_from_ranges
from headwater.services.trainer.learn.learner import (
    Position,
    Progress,
    decode_progress,
    encode_progress,
)
from headwater.services.trainer.timestamps import timestamp
from headwater.shared.artifacts import ArtifactCodec, SignedArtifact
from headwater.shared.bus.codec import decode_event, header
from headwater.shared.bus.consumer import assign_all_partitions, fetch_batch
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.pb import events_pb2
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)

PROGRESS_HEADER = "x-headwater-learner-progress"
PROGRESS_SIGNATURE_HEADER = "x-headwater-learner-progress-signature"

Headers = Iterable[tuple[str, bytes]]


def _progress_signature(codec: ArtifactCodec, sha256: str, progress: bytes) -> str:
    return codec.sign(sha256.encode() + b"\n" + progress)


def encode_update(
    model: str,
    artifact: SignedArtifact,
    progress: Progress,
    sequence: int,
    codec: ArtifactCodec,
    now: float,
) -> tuple[events_pb2.ModelUpdate, list[tuple[str, bytes]]]:
    """The ModelUpdate and the progress headers that save a learner."""
    update = events_pb2.ModelUpdate(
        model=model,
        base_version=progress.base_version,
        sequence=sequence,
        state=artifact.content,
        sha256=artifact.sha256,
        signature=artifact.signature,
        offsets=offset_ranges(progress.offsets),
        examples_learned=progress.examples_learned,
    )
    update.published_at.CopyFrom(timestamp(now))
    if progress.newest_label_at is not None:
        update.newest_label_at.CopyFrom(timestamp(progress.newest_label_at))
    body = encode_progress(progress)
    signature = _progress_signature(codec, artifact.sha256, body)
    return update, [(PROGRESS_HEADER, body), (PROGRESS_SIGNATURE_HEADER, signature.encode())]


def saved_progress(
    update: events_pb2.ModelUpdate, headers: Headers, codec: ArtifactCodec
) -> Progress:
    """The learner progress saved with ``update``.

    Falls back to what the update itself says (base version, count, offsets)
    when the progress header is absent or does not verify.
    """
    headers = list(headers)
    body = header(headers, PROGRESS_HEADER)
    signature = header(headers, PROGRESS_SIGNATURE_HEADER)
    if body is not None and signature is not None:
        expected = _progress_signature(codec, update.sha256, body)
        if expected == signature.decode("ascii", errors="replace"):
            try:
                progress = decode_progress(body)
                if progress.base_version == update.base_version:
                    return progress
            except InvalidInput as err:
                log.warning("saved learner progress unreadable", extra={"error": str(err)})
        else:
            log.warning("saved learner progress does not verify", extra={"model": update.model})
    spans = spans_from_ranges(update.offsets)
    return Progress(
        base_version=update.base_version,
        examples_learned=update.examples_learned,
        offsets=spans,
        positions=tuple(Position(s.topic, s.partition, s.last) for s in spans),
    )


@dataclass(frozen=True)
class SavedUpdate:
    """The latest ModelUpdate of a model with its record headers."""

    update: events_pb2.ModelUpdate
    headers: tuple[tuple[str, bytes], ...]


class UpdateIndex:
    """Reads ``model-updates`` from the beginning and keeps the latest update per model.

    Group-less: every trainer reads every partition (the topic is compacted and small).

    Args:
        kafka: Broker and topic prefix.
        client_id: Names the consumer on the broker.

    """

    def __init__(self, kafka: KafkaSettings, client_id: str) -> None:
        self._kafka = kafka
        self._client_id = client_id
        self._latest: dict[str, SavedUpdate] = {}
        self._sequences: dict[str, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._moved = asyncio.Event()

    def latest(self, model: str) -> SavedUpdate | None:
        """The newest update of ``model`` read so far."""
        return self._latest.get(model)

    def max_sequence(self, model: str) -> int:
        """The highest sequence any update of ``model`` carried (0 if none)."""
        return self._sequences.get(model, 0)

    def record(self, update: events_pb2.ModelUpdate, headers: Headers) -> None:
        """Take note of an update (read from the topic, or just published).

        An update older than the latest one noted (a lower sequence: the topic
        read back after :meth:`LearnerPool.saved` noted a newer one) is ignored,
        so a restore never goes back to an older state.

        >>> index = UpdateIndex(KafkaSettings(bootstrap="127.0.0.1:1"), "doc")
        >>> index.record(events_pb2.ModelUpdate(model="m", sequence=5), [])
        >>> index.record(events_pb2.ModelUpdate(model="m", sequence=4), [])
        >>> index.latest("m").update.sequence, index.max_sequence("m")
        (5, 5)
        """
        current = self._latest.get(update.model)
        if current is None or update.sequence >= current.update.sequence:
            self._latest[update.model] = SavedUpdate(update, tuple(headers))
        self._sequences[update.model] = max(self.max_sequence(update.model), update.sequence)

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
                    self._read(record)
                    self._positions[tp] = record.offset + 1
            self._moved.set()
            self._moved.clear()

    def _read(self, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            update = decode_event(events_pb2.ModelUpdate, record.value, record.headers)
        except InvalidInput as err:
            log.warning("unreadable model update ignored", extra={"error": str(err)})
            return
        if update.model:
            self.record(update, record.headers)

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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
