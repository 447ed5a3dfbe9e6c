"""The learners of the models this trainer owns: load, learn, save, checkpoint, follow deployments.

No Kafka consumer here (see :mod:`headwater.services.trainer.learning`): the
pool gets each example record with its position, asks the registry what to
start from, and tells the consuming loop what to publish and what it may
commit. One learner per model, owned by the consuming loop's task.

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
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from headwater.services.trainer import checkpoints, metrics
from headwater.services.trainer.convert import (
    example_from_proto,
    learner_kind,
    offset_ranges,
    primary_version,
)
from headwater.services.trainer.learner import Learner, Position, Progress, StepKind
from headwater.services.trainer.settings import TrainerSettings
from headwater.services.trainer.updates import UpdateIndex, encode_update, saved_progress
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import decode_event
from headwater.shared.errors import (
    ArtifactIntegrityError,
    InvalidInput,
    ModelNotFound,
    NotFound,
    Unavailable,
)
from headwater.shared.features import FeatureSchema
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient, lineage

log = logging.getLogger(__name__)

TP = tuple[str, int]

#: Most model names remembered as having no learner (the topic is open to any name).
NOT_DEPLOYED_CACHE_SIZE = 256


class Outcome(StrEnum):
    """What became of one example record."""

    LEARNED = "learned"
    DUPLICATE = "duplicate"
    ALREADY_CONSUMED = "already_consumed"
    NOT_DEPLOYED = "not_deployed"
    DEAD_LETTER = "dead_lettered"


@dataclass(frozen=True)
class ExampleRecord:
    """One record of ``examples`` with its position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


Reject = Callable[[ExampleRecord, str], Awaitable[None]]


@dataclass(frozen=True)
class Processed:
    """The outcome of a record, with the reason when it must be dead-lettered."""

    outcome: Outcome
    reason: str = ""


@dataclass
class ActiveLearner:
    """A model's learner with what the pool tracks about it."""

    learner: Learner
    spec_json: str
    seed: int
    schema: FeatureSchema
    sequence: int
    unsaved_from: dict[TP, int] = field(default_factory=dict)
    dirty: bool = False
    last_sync: float = float("-inf")
    checkpointed_examples: int = 0
    last_checkpoint: float = 0.0
    marks: dict[int, Progress] = field(default_factory=dict)
    checkpointing: asyncio.Task[registry_pb2.ModelVersion | None] | None = None
    checkpoint_error: str = ""
    checkpoint_retry_at: float = 0.0
    unanswered: tuple[str, Progress] | None = None

    def consumed(self, at: Position) -> None:
        """Note a consumed position that the next ModelUpdate must save."""
        self.unsaved_from.setdefault((at.topic, at.partition), at.offset)
        self.dirty = True


class NotLearnable:
    """Why a model has no learner, remembered for a while; at most ``size`` names (LRU).

    >>> cache = NotLearnable(ttl_s=5.0, size=2)
    >>> cache.put("a", "not deployed", now=0.0); cache.put("b", "not deployed", now=0.0)
    >>> cache.get("a", now=1.0)  # used: now the most recent
    'not deployed'
    >>> cache.put("c", "unknown", now=1.0)  # evicts the least recently used, b
    >>> cache.get("b", now=1.0), cache.get("a", now=6.0), len(cache)
    (None, None, 1)
    """

    def __init__(self, ttl_s: float, size: int) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: str, now: float) -> str | None:
        """The remembered reason, None when absent or expired."""
        entry = self._entries.get(model)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[model]
            return None
        self._entries.move_to_end(model)
        return entry[1]

    def put(self, model: str, reason: str, now: float) -> None:
        """Remember ``reason`` for ``ttl_s``, evicting the least recently used name if full."""
        self._entries[model] = (now + self._ttl_s, reason)
        self._entries.move_to_end(model)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, model: str) -> None:
        """Ask the registry again next time (a registry event about the model)."""
        self._entries.pop(model, None)


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
        self.learners: dict[str, ActiveLearner] = {}
        self._clock = clock
        self._wall = wall
        self._not_deployed = NotLearnable(settings.not_deployed_recheck_s, NOT_DEPLOYED_CACHE_SIZE)
        self._pending: dict[str, registry_pb2.Deployment] = {}

    # -- examples -------------------------------------------------------------------

    async def process(self, record: ExampleRecord, reject: Reject) -> Processed:
        """Learn one example record (test, then train) if its model is deployed.

        A record that cannot be learned is handed to ``reject`` (with the reason)
        before the learner moves past it.

        Raises:
            Unavailable: The registry or the dead-letter topic could not be
                reached; nothing changed, retry the record later.

        """
        try:
            message = decode_event(events_pb2.LabeledExample, record.value, record.headers)
            if not message.model:
                raise InvalidInput(f"LabeledExample {message.example_id!r} names no model")
        except InvalidInput as err:
            await reject(record, str(err))
            return Processed(Outcome.DEAD_LETTER, str(err))
        active = await self.learner_for(message.model)
        if isinstance(active, str):  # no deployment, unknown model, or one we cannot learn
            await reject(record, active)
            return self._count(message.model, Processed(Outcome.NOT_DEPLOYED, active))
        at = Position(record.topic, record.partition, record.offset)
        resume_at = active.learner.next_offset(at.topic, at.partition)
        if resume_at is not None and at.offset < resume_at:
            return self._count(message.model, Processed(Outcome.ALREADY_CONSUMED))
        try:
            example = example_from_proto(message, active.learner.kind, active.schema)
            step = active.learner.process(example, at)
        except Exception as err:  # bad example or River refusing it: skip, keep learning
            reason = str(err) if isinstance(err, InvalidInput) else f"model cannot learn: {err!r}"
            await reject(record, reason)
            active.learner.skip(at)
            active.consumed(at)
            return self._count(message.model, Processed(Outcome.DEAD_LETTER, reason))
        if step is not StepKind.ALREADY_CONSUMED:
            active.consumed(at)
        return self._count(message.model, Processed(Outcome(step.value)))

    def _count(self, model: str, processed: Processed) -> Processed:
        metrics.EXAMPLES.labels(model=model, outcome=processed.outcome.value).inc()
        return processed

    async def learner_for(self, model: str) -> ActiveLearner | str:
        """The model's learner, loaded from the registry (and its last update) on first use.

        Returns:
            The learner, or why there is none (no deployment, unknown model, an
            artifact that cannot be learned); that answer is remembered for
            ``not_deployed_recheck_s`` (or until a registry event about the model).

        Raises:
            Unavailable: The registry did not answer.

        """
        active = self.learners.get(model)
        if active is not None:
            return active
        remembered = self._not_deployed.get(model, self._clock())
        if remembered is not None:
            return remembered
        loaded = await self._load(model)
        if isinstance(loaded, str):
            self._not_deployed.put(model, loaded, self._clock())
            return loaded
        self.learners[model] = loaded
        return loaded

    async def _load(self, model: str) -> ActiveLearner | str:
        try:
            version = primary_version(await self.registry.get_deployment(model))
            if version is None:
                return f"model {model!r} is not deployed: its deployment has no route"
            info = await self.registry.get_model(model)
            kind = learner_kind(info.task)
            found = await self.registry.get_artifact(model, version)
            artifact = found.version.artifact
            # verified and unpickled in a worker thread: the join's agents share this loop
            estimator = await asyncio.to_thread(
                self.codec.decode, found.content, artifact.signature, artifact.sha256
            )
        except (ModelNotFound, NotFound) as err:
            return f"model {model!r} is not deployed: {err}"
        except (InvalidInput, ArtifactIntegrityError) as err:
            log.error("cannot learn this model", extra={"model": model, "error": str(err)})
            return f"model {model!r} cannot be learned: {err}"
        estimator, progress = await self._restore(model, version, estimator)
        learner = Learner(
            model,
            kind,
            base_version=version,
            model=estimator,
            progress=progress,
            dedupe_ids=self.settings.dedupe_ids,
            metric_window=self.settings.metric_window,
        )
        log.info(
            "learner started",
            extra={"model": model, "base_version": version, "restored": progress is not None},
        )
        return ActiveLearner(
            learner,
            spec_json=found.version.spec_json,
            seed=found.version.lineage.seed,
            schema=FeatureSchema.from_proto(info),
            sequence=self.index.max_sequence(model),
            checkpointed_examples=learner.examples_learned,
            last_checkpoint=self._clock(),
        )

    async def _restore(
        self, model: str, version: int, base: object
    ) -> tuple[object, Progress | None]:
        saved = self.index.latest(model)
        if saved is None or saved.update.base_version != version:
            return base, None
        update = saved.update
        try:
            state = await asyncio.to_thread(
                self.codec.decode, update.state, update.signature, update.sha256
            )
        except ArtifactIntegrityError as err:
            log.error("saved learner state refused", extra={"model": model, "error": str(err)})
            return base, None
        return state, saved_progress(update, saved.headers, self.codec)

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
            active = self.learners.get(model)
            if active is None:
                continue
            version = primary_version(deployment)
            if version == active.learner.base_version:
                continue
            mark = active.marks.get(version) if version is not None else None
            if version is not None and mark is not None:
                active.learner.rebase(version, mark)
                active.marks.clear()
                active.checkpointed_examples = 0
                active.dirty, active.last_sync = (
                    True,
                    float("-inf"),
                )  # publish under the new base now
                log.info("learner rebased", extra={"model": model, "base_version": version})
                continue
            log.info("learner restarts", extra={"model": model, "base_version": version})
            del self.learners[model]

    # -- saving -----------------------------------------------------------------------

    def due_updates(self, force: bool = False) -> list[str]:
        """Models whose learner should publish a ModelUpdate now."""
        now = self._clock()
        interval_s = self.settings.sync_interval_ms / 1000
        return [
            model
            for model, active in self.learners.items()
            if active.dirty and (force or now - active.last_sync >= interval_s)
        ]

    async def build_update(
        self, model: str
    ) -> tuple[events_pb2.ModelUpdate, list[tuple[str, bytes]]]:
        """Encode the learner's state and progress as its next ModelUpdate.

        The state is pickled and signed in a worker thread, so call this only
        while no learner changes (the learning loop holds its lock around
        learning and saving): the snapshot is consistent with ``progress``.
        """
        active = self.learners[model]
        progress = active.learner.progress()
        sequence = max(active.sequence, self.index.max_sequence(model)) + 1
        active.sequence = sequence  # reserved even if the send fails: sequences never repeat
        artifact = await asyncio.to_thread(self.codec.encode, active.learner.model)
        return encode_update(model, artifact, progress, sequence, self.codec, self._wall())

    def saved(self, model: str, update: events_pb2.ModelUpdate, headers: list) -> None:
        """The update was acknowledged: the learner's consumption so far is safe."""
        active = self.learners.get(model)
        self.index.record(update, headers)
        metrics.MODEL_UPDATES.labels(model=model).inc()
        if active is None or active.learner.base_version != update.base_version:
            return
        active.unsaved_from.clear()
        active.dirty = False
        active.last_sync = self._clock()
        self._export(model, active)

    def _export(self, model: str, active: ActiveLearner) -> None:
        metrics.LEARNER_EXAMPLES.labels(model=model).set(active.learner.examples_learned)
        for name, value in active.learner.metrics().items():
            if name != "examples":
                metrics.LEARNER_METRIC.labels(model=model, metric=name).set(value)

    def commit_offsets(self, processed: Mapping[TP, int]) -> dict[TP, int]:
        """Per partition, the offset the group may commit: nothing unsaved lies before it."""
        offsets = dict(processed)
        for active in self.learners.values():
            for tp, first in active.unsaved_from.items():
                if tp in offsets:
                    offsets[tp] = min(offsets[tp], first)
        return offsets

    def drop(self, partitions: set[TP]) -> list[str]:
        """Forget the learners that consumed from ``partitions`` (revoked); their names."""
        gone = [
            model
            for model, active in self.learners.items()
            if active.learner.partitions() & partitions
        ]
        for model in gone:
            del self.learners[model]
        return gone

    # -- checkpoints ------------------------------------------------------------------

    def due_checkpoints(self) -> list[str]:
        """Models whose learner has learned enough, or long enough, for a checkpoint."""
        now = self._clock()
        due = []
        for model, active in self.learners.items():
            busy = active.checkpointing is not None and not active.checkpointing.done()
            if busy or now < active.checkpoint_retry_at:
                continue
            fresh = active.learner.examples_learned - active.checkpointed_examples
            if fresh >= self.settings.checkpoint_every_examples or (
                fresh > 0 and now - active.last_checkpoint >= self.settings.checkpoint_every_s
            ):
                due.append(model)
        return due

    def start_checkpoint(self, model: str) -> asyncio.Task[registry_pb2.ModelVersion | None]:
        """Snapshot the learner now and register it as a version in the background.

        The task's result is the new version, or None when the registry refused
        or could not be reached (``checkpoint_error`` says why; retried later).
        Registration is idempotent: see :mod:`headwater.services.trainer.checkpoints`.

        Raises:
            ModelNotFound: This trainer has no learner for ``model``.

        """
        active = self.learners.get(model)
        if active is None:
            raise ModelNotFound(f"this trainer has no learner for model {model!r}")
        if active.checkpointing is not None and not active.checkpointing.done():
            return active.checkpointing
        request, progress = self._snapshot(model, active)
        previous = active.checkpointed_examples
        active.checkpointed_examples = progress.examples_learned
        active.last_checkpoint = self._clock()
        active.checkpointing = asyncio.create_task(
            self._register(active, request, progress, previous), name=f"checkpoint-{model}"
        )
        return active.checkpointing

    def _snapshot(
        self, model: str, active: ActiveLearner
    ) -> tuple[checkpoints.CheckpointRequest, Progress]:
        learner = active.learner
        progress = learner.progress()
        content = checkpoints.pickled_state(self.codec, learner.model)  # the consistency point
        version_lineage = lineage(
            parent_version=learner.base_version,
            source="online-snapshot",
            offsets=offset_ranges(progress.offsets),
            example_count=progress.examples_learned,
            metrics=learner.metrics(),
            seed=active.seed,
        )
        request = checkpoints.CheckpointRequest(
            model=model,
            spec_json=active.spec_json,
            lineage=version_lineage,
            content=content,
            description=f"online snapshot of v{progress.base_version} after "
            f"{progress.examples_learned} examples",
            checkpoint_id=checkpoints.checkpoint_id(
                model, progress.base_version, progress.examples_learned
            ),
        )
        return request, progress

    async def _register(
        self,
        active: ActiveLearner,
        request: checkpoints.CheckpointRequest,
        progress: Progress,
        previous: int,
    ) -> registry_pb2.ModelVersion | None:
        model = request.model
        try:
            if not request.signature:  # HMAC of a large state: off the event loop
                signature = await asyncio.to_thread(self.codec.sign, request.content)
                request = dataclasses.replace(request, signature=signature)
            version = await self._confirm_unanswered(model, active, request.checkpoint_id)
            if version is None:
                version = await checkpoints.register(
                    self.registry, request, self.settings.registry_retry_s
                )
        except Exception as err:
            metrics.CHECKPOINTS.labels(model=model, outcome="failed").inc()
            active.checkpointed_examples = previous
            active.checkpoint_error = str(err) or repr(err)
            active.checkpoint_retry_at = self._clock() + 5 * self.settings.registry_retry_s
            if isinstance(err, Unavailable):  # it may have committed: look for it first next time
                active.unanswered = (request.checkpoint_id, progress)
            log.error("checkpoint failed", extra={"model": model, "error": repr(err)})
            return None
        active.checkpoint_error = ""
        self._mark(active, version, progress)
        metrics.CHECKPOINTS.labels(model=model, outcome="created").inc()
        log.info("checkpoint registered", extra={"model": model, "version": version.version})
        return version

    async def _confirm_unanswered(
        self, model: str, active: ActiveLearner, checkpoint: str
    ) -> registry_pb2.ModelVersion | None:
        """Adopt the version an unanswered earlier checkpoint committed, if any.

        Returns it when it is the very checkpoint about to be registered (nothing
        was learned since), else None.

        Raises:
            Unavailable: The registry did not answer (the earlier one stays unconfirmed).

        """
        unanswered = active.unanswered
        if unanswered is None:
            return None
        found = await checkpoints.find_checkpoint(self.registry, model, unanswered[0])
        active.unanswered = None
        if found is None:
            return None
        log.info("unanswered checkpoint adopted", extra={"model": model, "version": found.version})
        if unanswered[0] == checkpoint:
            return found
        self._mark(active, found, unanswered[1])
        return None

    @staticmethod
    def _mark(
        active: ActiveLearner, version: registry_pb2.ModelVersion, progress: Progress
    ) -> None:
        """Remember what a checkpoint holds, so deploying it rebases the learner."""
        if active.learner.base_version == progress.base_version:
            active.marks[version.version] = progress

    async def stop_checkpoints(self, timeout_s: float) -> None:
        """Let checkpoints in flight finish within ``timeout_s``, then cancel them."""
        tasks = [
            a.checkpointing
            for a in self.learners.values()
            if a.checkpointing is not None and not a.checkpointing.done()
        ]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
