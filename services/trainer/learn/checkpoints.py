"""Checkpoints: learner snapshots registered as versions, at most once, even when answers are lost.

:class:`Checkpointer` decides when a learner is due, snapshots it on the event
loop and registers the snapshot in the background. What it tracks per learner
(:class:`CheckpointState`) is written by it alone.

``CreateVersion`` is not idempotent: when a call times out (or the registry is
UNAVAILABLE) it may still have committed. Each checkpoint therefore carries a
tag naming it (:data:`CHECKPOINT_TAG`: model, base version and the count of
examples learned since it, which together name one learner state); before
trying again the trainer lists the model's versions and adopts the one with
that tag instead of registering a second copy.

Each snapshot's metrics are also evaluations (:mod:`.evaluations`): the learner's
own version's at the snapshot, and, once registered, the checkpoint version's,
which holds that very state.

>>> checkpoint_id("churn", 3, 500)
'churn/3/500'
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from headwater.services.trainer import metrics
from headwater.services.trainer.learn.convert import offset_ranges
from headwater.services.trainer.learn.evaluations import (
    EvaluationOutbox,
    LearnerEvaluation,
    for_version,
    learner_evaluations,
)
from headwater.services.trainer.learn.learner import Learner, Progress
from headwater.services.trainer.learn.loading import LoadedLearner
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import PICKLE_PROTOCOL, ArtifactCodec
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, lineage

log = logging.getLogger(__name__)

#: Version tag naming the learner state a checkpoint holds.
CHECKPOINT_TAG = "headwater.checkpoint-id"
#: Attempts at registering one checkpoint before giving up until the next one.
ATTEMPTS = 3


def checkpoint_id(model: str, base_version: int, examples_learned: int) -> str:
    """The tag value of a checkpoint: the state after ``examples_learned`` on ``base_version``."""
    return f"{model}/{base_version}/{examples_learned}"


@dataclass(frozen=True)
class CheckpointRequest:
    """What to register: the snapshot's artifact, spec, lineage and its checkpoint id."""

    model: str
    spec_json: str
    lineage: registry_pb2.Lineage
    content: bytes
    description: str
    checkpoint_id: str
    signature: str = ""
    evaluations: tuple[LearnerEvaluation, ...] = ()


@dataclass(frozen=True)
class UnansweredCheckpoint:
    """A registration left unanswered: it may have committed (looked up before the next one).

    Attributes:
        checkpoint_id: The checkpoint's tag value.
        progress: The learner's progress the checkpoint holds.
        evaluations: The learner's evaluations at the snapshot (the version's, once found).

    """

    checkpoint_id: str
    progress: Progress
    evaluations: tuple[LearnerEvaluation, ...] = ()


@dataclass
class CheckpointState:
    """The checkpoints of one learner; written only by its :class:`Checkpointer`.

    Attributes:
        examples: Examples learned when the last checkpoint was taken (the cadence's start).
        taken_at: When the last checkpoint was taken, or the learner loaded (monotonic seconds).
        marks: The progress each version registered from this learner holds (deploying
            one of them rebases the learner instead of starting it over).
        task: The registration in flight or last finished, if any.
        error: Why the last registration failed; empty once one succeeds.
        retry_at: No checkpoint is due before this (monotonic seconds), after a failure.
        unanswered: A registration left unanswered (it may have committed: looked up
            before the next one is registered).

    """

    examples: int
    taken_at: float
    marks: dict[int, Progress] = field(default_factory=dict)
    task: asyncio.Task[registry_pb2.ModelVersion | None] | None = None
    error: str = ""
    retry_at: float = 0.0
    unanswered: UnansweredCheckpoint | None = None

    @property
    def busy(self) -> bool:
        """Whether a registration is in flight."""
        return self.task is not None and not self.task.done()


def pickled_state(codec: ArtifactCodec, model: Any) -> bytes:
    """The model's artifact content, pickled now (on the event loop, between two examples).

    Pickling is the consistency point of a checkpoint taken while learning goes
    on; signing the bytes can then happen in a worker thread.

    Raises:
        ResourceExhausted: The state is larger than the codec's ``max_bytes``.

    """
    content = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    if len(content) > codec.max_bytes:
        raise ResourceExhausted(
            f"encoded model is {len(content)} bytes, over the limit of {codec.max_bytes}"
        )
    return content


async def find_checkpoint(
    registry: RegistryClient, model: str, checkpoint: str
) -> registry_pb2.ModelVersion | None:
    """The model's version carrying checkpoint id ``checkpoint``, None when there is none.

    Raises:
        Unavailable: The registry did not answer.

    """
    for version in await registry.list_versions(model):
        if version.tags.get(CHECKPOINT_TAG) == checkpoint:
            return version
    return None


async def register(
    registry: RegistryClient, request: CheckpointRequest, retry_s: float
) -> registry_pb2.ModelVersion:
    """Create the checkpoint's version, or adopt the one an unanswered attempt committed.

    Raises:
        Unavailable: No attempt got an answer (the version may exist: look it
            up with :func:`find_checkpoint` before registering another).
        HeadwaterError: The registry refused the version.

    """
    tags = {"created_by": "trainer", CHECKPOINT_TAG: request.checkpoint_id}
    failure: Unavailable | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(retry_s)
            try:
                found = await find_checkpoint(registry, request.model, request.checkpoint_id)
            except Unavailable as err:
                failure = err
                continue
            if found is not None:
                log.info("checkpoint adopted", extra={"checkpoint": request.checkpoint_id})
                return found
        try:
            return await registry.create_version(
                request.model,
                request.spec_json,
                request.lineage,
                artifact=request.content,
                artifact_signature=request.signature,
                description=request.description,
                tags=tags,
            )
        except Unavailable as err:
            failure = err
    assert failure is not None
    raise failure


class Checkpointer:
    """Takes and registers the checkpoints of the pool's learners.

    Each checkpoint puts the learner's evaluations at the snapshot in ``outbox``:
    for its base version when taken, for the checkpoint's version once registered.

    Args:
        settings: Checkpoint cadences and the registry retry pause.
        registry: Where checkpoints are registered.
        codec: Signs the snapshots.
        clock: Monotonic seconds (cadences and retry pauses).
        outbox: Where the evaluations of each snapshot wait to be reported.
        wall: Wall-clock seconds (when a snapshot's metrics were measured).

    """

    def __init__(
        self,
        settings: TrainerSettings,
        registry: RegistryClient,
        codec: ArtifactCodec,
        clock: Callable[[], float],
        outbox: EvaluationOutbox | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._codec = codec
        self._clock = clock
        self._outbox = outbox if outbox is not None else EvaluationOutbox()
        self._wall = wall

    def track(self, learner: Learner) -> CheckpointState:
        """The checkpoint state of a learner just loaded: its cadence starts now."""
        return CheckpointState(examples=learner.examples_learned, taken_at=self._clock())

    def is_due(self, learner: Learner, state: CheckpointState) -> bool:
        """Whether the learner has learned enough, or long enough, for a checkpoint."""
        now = self._clock()
        if state.busy or now < state.retry_at:
            return False
        fresh = learner.examples_learned - state.examples
        return fresh >= self._settings.checkpoint_every_examples or (
            fresh > 0 and now - state.taken_at >= self._settings.checkpoint_every_s
        )

    def take(
        self, model: str, loaded: LoadedLearner, state: CheckpointState
    ) -> asyncio.Task[registry_pb2.ModelVersion | None]:
        """Snapshot the learner now and register it as a version in the background.

        The task's result is the new version, or None when the registry refused
        or could not be reached (``state.error`` says why; retried later).
        """
        if state.task is not None and state.busy:
            return state.task
        request, progress = self._snapshot(model, loaded)
        self._outbox.put(request.evaluations)  # the learner's own version, at the snapshot
        previous = state.examples
        state.examples = progress.examples_learned
        state.taken_at = self._clock()
        state.task = asyncio.create_task(
            self._register(loaded.learner, state, request, progress, previous),
            name=f"checkpoint-{model}/{loaded.learner.base_version}",
        )
        return state.task

    def restart_after_rebase(self, state: CheckpointState) -> None:
        """The learner was rebased onto one of its checkpoints: its cadence restarts from it."""
        state.marks.clear()
        state.examples = 0

    def _snapshot(self, model: str, loaded: LoadedLearner) -> tuple[CheckpointRequest, Progress]:
        learner = loaded.learner
        progress = learner.progress()
        content = pickled_state(self._codec, learner.model)  # the consistency point
        measured = learner.metrics()
        version_lineage = lineage(
            parent_version=learner.base_version,
            source="online-snapshot",
            offsets=offset_ranges(progress.offsets),
            example_count=progress.examples_learned,
            metrics=measured,
            seed=loaded.seed,
        )
        evaluations = learner_evaluations(
            model, progress.base_version, measured, progress.scored, self._wall()
        )
        request = CheckpointRequest(
            model=model,
            spec_json=loaded.spec_json,
            lineage=version_lineage,
            content=content,
            description=f"online snapshot of v{progress.base_version} after "
            f"{progress.examples_learned} examples",
            checkpoint_id=checkpoint_id(model, progress.base_version, progress.examples_learned),
            evaluations=evaluations,
        )
        return request, progress

    async def _register(
        self,
        learner: Learner,
        state: CheckpointState,
        request: CheckpointRequest,
        progress: Progress,
        previous: int,
    ) -> registry_pb2.ModelVersion | None:
        model = request.model
        try:
            if not request.signature:  # HMAC of a large state: off the event loop
                signature = await asyncio.to_thread(self._codec.sign, request.content)
                request = dataclasses.replace(request, signature=signature)
            version = await self._confirm_unanswered(model, learner, state, request.checkpoint_id)
            if version is None:
                version = await register(self._registry, request, self._settings.registry_retry_s)
        except Exception as err:
            metrics.CHECKPOINTS.labels(model=model, outcome="failed").inc()
            state.examples = previous
            state.error = str(err) or repr(err)
            state.retry_at = self._clock() + 5 * self._settings.registry_retry_s
            if isinstance(err, Unavailable):  # it may have committed: look for it first next time
                state.unanswered = UnansweredCheckpoint(
                    request.checkpoint_id, progress, request.evaluations
                )
            log.error("checkpoint failed", extra={"model": model, "error": repr(err)})
            return None
        state.error = ""
        _mark(learner, state, version, progress)
        self._outbox.put(for_version(request.evaluations, version.version))
        metrics.CHECKPOINTS.labels(model=model, outcome="created").inc()
        log.info("checkpoint registered", extra={"model": model, "version": version.version})
        return version

    async def _confirm_unanswered(
        self, model: str, learner: Learner, state: CheckpointState, checkpoint: str
    ) -> registry_pb2.ModelVersion | None:
        """Adopt the version an unanswered earlier checkpoint committed, if any.

        Returns it when it is the very checkpoint about to be registered (nothing
        was learned since), else None.

        Raises:
            Unavailable: The registry did not answer (the earlier one stays unconfirmed).

        """
        unanswered = state.unanswered
        if unanswered is None:
            return None
        found = await find_checkpoint(self._registry, model, unanswered.checkpoint_id)
        state.unanswered = None
        if found is None:
            return None
        log.info("unanswered checkpoint adopted", extra={"model": model, "version": found.version})
        if unanswered.checkpoint_id == checkpoint:
            return found
        _mark(learner, state, found, unanswered.progress)
        self._outbox.put(for_version(unanswered.evaluations, found.version))
        return None


def _mark(
    learner: Learner,
    state: CheckpointState,
    version: registry_pb2.ModelVersion,
    progress: Progress,
) -> None:
    """Remember what a checkpoint holds, so deploying it rebases the learner."""
    if learner.base_version == progress.base_version:
        state.marks[version.version] = progress


async def drain_checkpoints(states: Iterable[CheckpointState], timeout_s: float) -> None:
    """Let checkpoints in flight finish within ``timeout_s``, then cancel them."""
    tasks = [s.task for s in states if s.task is not None and s.busy]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
