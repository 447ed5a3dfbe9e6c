"""The learners of the models this trainer owns: learn, save, commit, follow deployments.

No Kafka consumer here (see :mod:`headwater.services.trainer.learn.consumer`): the
pool gets each example record with its position, asks the registry what to
start from, and tells the consuming loop what to publish and what it may
commit. One learner per model, owned by the consuming loop's task. Loading a
learner is :mod:`headwater.services.trainer.learn.loading`'s part, taking its
checkpoints :mod:`headwater.services.trainer.learn.checkpoints`'s.

What the pool keeps per learner is an
:class:`~headwater.services.trainer.learn.active.ActiveLearner`, whose parts
each have one writer. Every lookup of a learner goes through
:meth:`LearnerPool.find`.

Saving and committing fit together so that no example is lost or learned
twice: a learner's state and positions are saved in one ModelUpdate; the
loop commits, per partition, no further than the first offset some learner
consumed but has not saved yet. After a crash the group resumes at the
committed offset, a learner restored from its latest update skips what it
had already consumed, and one without an update starts from its base version
at an offset no later than the first example it had learned unsaved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from headwater.services.trainer import metrics
from headwater.services.trainer.learn.active import TP, ActiveLearner, SaveState
from headwater.services.trainer.learn.checkpoints import Checkpointer, drain_checkpoints
from headwater.services.trainer.learn.convert import example_from_proto, primary_version
from headwater.services.trainer.learn.learner import Position, StepKind
from headwater.services.trainer.learn.loading import (
    NOT_DEPLOYED_CACHE_SIZE,
    LearnerLoader,
    NotLearnable,
)
from headwater.services.trainer.learn.updates import UpdateIndex, encode_update
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import InvalidInput, ModelNotFound
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)


class ExampleOutcome(StrEnum):
    """What became of one example record."""

    LEARNED = "learned"
    DUPLICATE = "duplicate"
    ALREADY_CONSUMED = "already_consumed"
    NOT_DEPLOYED = "not_deployed"
    DEAD_LETTER = "dead_lettered"


#: Dead-letters a record with the reason (the examples loop's ``RecordPolicy.reject``).
RejectExample = Callable[[ConsumedRecord, str], Awaitable[None]]


@dataclass(frozen=True)
class Processed:
    """The outcome of a record, with the reason when it must be dead-lettered."""

    outcome: ExampleOutcome
    reason: str = ""


class LearnerPool:
    """Every learner of this trainer, keyed by model name.

    Args:
        settings: Cadences, de-duplication and metric windows.
        registry: Where base versions come from and checkpoints go.
        codec: Verifies and encodes model state.
        index: The latest ModelUpdate of each model.
        clock: Monotonic seconds (cadences); ``wall`` gives timestamps.

    """

    def __init__(
        self,
        settings: TrainerSettings,
        registry: RegistryClient,
        codec: ArtifactCodec,
        index: UpdateIndex,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.codec = codec
        self.index = index
        self._learners: dict[str, ActiveLearner] = {}
        self._clock = clock
        self._wall = wall
        self._not_deployed = NotLearnable(settings.not_deployed_recheck_s, NOT_DEPLOYED_CACHE_SIZE)
        self._pending: dict[str, registry_pb2.Deployment] = {}
        self._loader = LearnerLoader(settings, registry, codec, index)
        self._checkpointer = Checkpointer(settings, registry, codec, clock)

    # -- examples -------------------------------------------------------------------

    async def process(self, record: ConsumedRecord, reject: RejectExample) -> Processed:
        """Learn one example record (test, then train) if its model is deployed.

        A record that cannot be learned is handed to ``reject`` (with the reason)
        before the learner moves past it.

        Raises:
            Unavailable: The registry or the dead-letter topic could not be
                reached; nothing changed, retry the record later.

        """
        try:
            message = record.decode(events_pb2.LabeledExample)
            if not message.model:
                raise InvalidInput(f"LabeledExample {message.example_id!r} names no model")
        except InvalidInput as err:
            await reject(record, str(err))
            return Processed(ExampleOutcome.DEAD_LETTER, str(err))
        active = await self.learner_for(message.model)
        if isinstance(active, str):  # no deployment, unknown model, or one we cannot learn
            await reject(record, active)
            return self._count(message.model, Processed(ExampleOutcome.NOT_DEPLOYED, active))
        at = Position(record.topic, record.partition, record.offset)
        resume_at = active.learner.next_offset(at.topic, at.partition)
        if resume_at is not None and at.offset < resume_at:
            return self._count(message.model, Processed(ExampleOutcome.ALREADY_CONSUMED))
        try:
            example = example_from_proto(message, active.learner.kind, active.loaded.schema)
            step = active.learner.process(example, at)
        except Exception as err:  # bad example or River refusing it: skip, keep learning
            reason = str(err) if isinstance(err, InvalidInput) else f"model cannot learn: {err!r}"
            await reject(record, reason)
            active.learner.skip(at)
            active.saving.consumed(at)
            return self._count(message.model, Processed(ExampleOutcome.DEAD_LETTER, reason))
        if step is not StepKind.ALREADY_CONSUMED:
            active.saving.consumed(at)
        return self._count(message.model, Processed(ExampleOutcome(step.value)))

    def _count(self, model: str, processed: Processed) -> Processed:
        metrics.EXAMPLES.labels(model=model, outcome=processed.outcome.value).inc()
        return processed

    def find(self, model: str) -> ActiveLearner | None:
        """The model's learner, None when this trainer has none (the one lookup of a learner)."""
        return self._learners.get(model)

    def active(self) -> list[tuple[str, ActiveLearner]]:
        """Every learner of this trainer with its model's name."""
        return list(self._learners.items())

    async def learner_for(self, model: str) -> ActiveLearner | str:
        """The model's learner, loaded from the registry (and its last update) on first use.

        Returns:
            The learner, or why there is none (no deployment, unknown model, an
            artifact that cannot be learned); that answer is remembered for
            ``not_deployed_recheck_s`` (or until a registry event about the model).

        Raises:
            Unavailable: The registry did not answer.

        """
        active = self.find(model)
        if active is not None:
            return active
        remembered = self._not_deployed.get(model, self._clock())
        if remembered is not None:
            return remembered
        loaded = await self._loader.load(model)
        if isinstance(loaded, str):
            self._not_deployed.put(model, loaded, self._clock())
            return loaded
        active = ActiveLearner(
            loaded,
            SaveState(sequence=self.index.max_sequence(model)),
            self._checkpointer.track(loaded.learner),
        )
        self._learners[model] = active
        return active

    # -- deployments ------------------------------------------------------------------

    def on_registry_event(self, event: events_pb2.RegistryEvent) -> None:
        """Note a deployment change (applied by the loop, between batches)."""
        self._not_deployed.forget(event.model)
        if event.kind == events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED:
            self._pending[event.model] = event.deployment

    def deployment_pending(self, model: str) -> bool:
        """Whether a deployment change of ``model`` was noted but not applied yet."""
        return model in self._pending

    def apply_deployments(self) -> None:
        """Follow deployment changes: rebase onto our own checkpoint, or start over."""
        pending, self._pending = self._pending, {}
        for model, deployment in pending.items():
            active = self.find(model)
            if active is None:
                continue
            version = primary_version(deployment)
            if version == active.learner.base_version:
                continue
            mark = active.checkpoints.marks.get(version) if version is not None else None
            if version is not None and mark is not None:
                active.learner.rebase(version, mark)
                self._checkpointer.restart_after_rebase(active.checkpoints)
                active.saving.rebased()
                log.info("learner rebased", extra={"model": model, "base_version": version})
                continue
            log.info("learner restarts", extra={"model": model, "base_version": version})
            del self._learners[model]

    # -- saving -----------------------------------------------------------------------

    def due_updates(self, force: bool = False) -> list[str]:
        """Models whose learner should publish a ModelUpdate now."""
        now = self._clock()
        interval_s = self.settings.sync_interval_ms / 1000
        return [
            model
            for model, active in self.active()
            if active.saving.dirty and (force or now - active.saving.last_sync >= interval_s)
        ]

    async def build_update(self, model: str) -> events_pb2.ModelUpdate:
        """Encode the learner's state and progress as its next (signed) ModelUpdate.

        The state is pickled, hashed and signed in worker threads, so call this
        only while no learner changes (the learning loop holds its lock around
        learning and saving): the snapshot is consistent with ``progress``.
        """
        active = self._require(model)
        progress = active.learner.progress()
        # reserved even if the send fails: sequences never repeat
        sequence = active.saving.reserve_sequence(self.index.max_sequence(model))
        artifact = await asyncio.to_thread(self.codec.encode, active.learner.model)
        return await asyncio.to_thread(
            encode_update, model, artifact, progress, sequence, self.codec, self._wall()
        )

    def saved(self, model: str, update: events_pb2.ModelUpdate) -> None:
        """The update was acknowledged: the learner's consumption so far is safe."""
        active = self.find(model)
        self.index.record(update)
        metrics.MODEL_UPDATES.labels(model=model).inc()
        if active is None or active.learner.base_version != update.base_version:
            return
        active.saving.acknowledged(self._clock())
        self._export(model, active)

    def _export(self, model: str, active: ActiveLearner) -> None:
        metrics.LEARNER_EXAMPLES.labels(model=model).set(active.learner.examples_learned)
        for name, value in active.learner.metrics().items():
            if name != "examples":
                metrics.LEARNER_METRIC.labels(model=model, metric=name).set(value)

    def commit_offsets(self, processed: Mapping[TP, int]) -> dict[TP, int]:
        """Per partition, the offset the group may commit: nothing unsaved lies before it."""
        offsets = dict(processed)
        for _, active in self.active():
            for tp, first in active.saving.unsaved_from.items():
                if tp in offsets:
                    offsets[tp] = min(offsets[tp], first)
        return offsets

    def drop(self, partitions: set[TP]) -> list[str]:
        """Forget the learners that consumed from ``partitions`` (revoked); their names."""
        gone = [
            model for model, active in self.active() if active.learner.partitions() & partitions
        ]
        for model in gone:
            del self._learners[model]
        return gone

    # -- checkpoints ------------------------------------------------------------------

    def due_checkpoints(self) -> list[str]:
        """Models whose learner has learned enough, or long enough, for a checkpoint."""
        return [
            model
            for model, active in self.active()
            if self._checkpointer.is_due(active.learner, active.checkpoints)
        ]

    def start_checkpoint(self, model: str) -> asyncio.Task[registry_pb2.ModelVersion | None]:
        """Snapshot the learner now and register it as a version in the background.

        The task's result is the new version, or None when the registry refused
        or could not be reached (``checkpoint_error`` says why; retried later).
        Registration is idempotent: see :mod:`headwater.services.trainer.learn.checkpoints`.

        Raises:
            ModelNotFound: This trainer has no learner for ``model``.

        """
        active = self._require(model)
        return self._checkpointer.take(model, active.loaded, active.checkpoints)

    async def stop_checkpoints(self, timeout_s: float) -> None:
        """Let checkpoints in flight finish within ``timeout_s``, then cancel them."""
        await drain_checkpoints((a.checkpoints for _, a in self.active()), timeout_s)

    def _require(self, model: str) -> ActiveLearner:
        active = self.find(model)
        if active is None:
            raise ModelNotFound(f"this trainer has no learner for model {model!r}")
        return active
