"""The learners of the models this trainer owns: learn, save, commit, follow deployments.

No Kafka consumer here (see :mod:`headwater.services.trainer.learn.consumer`): the
pool gets each example record with its position, asks the registry what to
start from, and tells the consuming loop what to publish and what it may
commit. One learner per routed version of a model (primary, canary, shadow,
challenger: :mod:`headwater.services.trainer.learn.routes`), named by a
:class:`LearnerId`, all owned by the consuming loop's task. Each learns every
labelled example of its model in offset order, except a shadow's scoring copies
(``route_role`` SHADOW), which no learner learns: the learners already get the
answered prediction's example. Loading a learner is
:mod:`headwater.services.trainer.learn.loading`'s part, taking its checkpoints
:mod:`headwater.services.trainer.learn.checkpoints`'s.

What the pool keeps per learner is an
:class:`~headwater.services.trainer.learn.active.ActiveLearner`, whose parts
each have one writer, in a :class:`~headwater.services.trainer.learn.roster.Roster`.
Every lookup of a learner goes through :meth:`LearnerPool.find`. A learner whose
route went away is *retiring*: it learns nothing more, its last ModelUpdate is
published at once, then it stops.

Saving and committing fit together so that no example is lost or learned
twice: a learner's state and positions are saved in one ModelUpdate; the
loop commits, per partition, no further than the first offset some learner
(of any model, retiring ones included) consumed but has not saved yet. After a
crash the group resumes at the committed offset, a learner restored from its
latest update skips what it had already consumed, and one without an update
starts from its base version at an offset no later than the first example it
had learned unsaved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from headwater.services.trainer import metrics
from headwater.services.trainer.learn.active import TP, ActiveLearner, SaveState
from headwater.services.trainer.learn.checkpoints import Checkpointer, drain_checkpoints
from headwater.services.trainer.learn.evaluations import EvaluationOutbox
from headwater.services.trainer.learn.loading import (
    NOT_DEPLOYED_CACHE_SIZE,
    LearnerLoader,
    NotLearnable,
)
from headwater.services.trainer.learn.roster import ModelRoutes, Roster, export_metrics
from headwater.services.trainer.learn.routes import LearnerId, plan_route_change, routed_versions
from headwater.services.trainer.learn.steps import (
    ExampleOutcome,
    Processed,
    RejectExample,
    learn_record,
)
from headwater.services.trainer.learn.updates import UpdateIndex, encode_update
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import InvalidInput, ModelNotFound
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutedLearner:
    """A learner with the role of its route (what ``/v1/models`` lists)."""

    learner_id: LearnerId
    role: str
    active: ActiveLearner


class LearnerPool:
    """Every learner of this trainer, by :class:`LearnerId` (model, version).

    Args:
        settings: Cadences, de-duplication and metric windows.
        registry: Where base versions come from and checkpoints go.
        codec: Verifies and encodes model state.
        index: The latest ModelUpdate of each learner.
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
        self._roster = Roster()
        self._clock = clock
        self._wall = wall
        self._not_deployed = NotLearnable(settings.not_deployed_recheck_s, NOT_DEPLOYED_CACHE_SIZE)
        self._pending: dict[str, registry_pb2.Deployment] = {}
        self._loader = LearnerLoader(settings, registry, codec, index)
        #: The learners' evaluations waiting for the reporter (checkpoints put theirs here).
        self.evaluations = EvaluationOutbox()
        self._checkpointer = Checkpointer(settings, registry, codec, clock, self.evaluations, wall)

    # -- examples -------------------------------------------------------------------

    async def process(self, record: ConsumedRecord, reject: RejectExample) -> Processed:
        """Have every learner of the record's model learn it (test, then train).

        A record that cannot be learned, by some learner or by all, is handed to
        ``reject`` (with the reason) before those learners move past it.

        Raises:
            Unavailable: The registry or the dead-letter topic could not be
                reached; no learner that has not learned the record moved past
                it: retry the record later.

        """
        try:
            message = record.decode(events_pb2.LabeledExample)
            if not message.model:
                raise InvalidInput(f"LabeledExample {message.example_id!r} names no model")
        except InvalidInput as err:
            await reject(record, str(err))
            return Processed(ExampleOutcome.DEAD_LETTER, str(err))
        if message.route_role == registry_pb2.ROUTE_ROLE_SHADOW:
            return self._count(message.model, Processed(ExampleOutcome.SHADOW_COPY))
        learners = await self.learners_of(message.model, (record.topic, record.partition))
        if isinstance(learners, str):  # no deployment, unknown model, or one we cannot learn
            await reject(record, learners)
            return self._count(message.model, Processed(ExampleOutcome.NOT_DEPLOYED, learners))
        processed = await learn_record(record, message, learners, reject)
        return self._count(message.model, processed)

    def _count(self, model: str, processed: Processed) -> Processed:
        metrics.EXAMPLES.labels(model=model, outcome=processed.outcome.value).inc()
        return processed

    def find(self, model: str, version: int | None = None) -> ActiveLearner | None:
        """The learner of ``model`` on ``version`` (None: on the primary route's version).

        The one lookup of a learner; None when this trainer has no such learner.
        """
        if version is None:
            version = self._roster.primary(model)
            if version is None:
                return None
        return self._roster.find(LearnerId(model, version))

    def learners(self) -> list[RoutedLearner]:
        """Every learner of a routed version, with its route's role, by model and version."""
        roster = self._roster
        return [RoutedLearner(i, roster.role(i), a) for i, a in sorted(roster.routed.items())]

    async def learners_of(self, model: str, partition: TP) -> list[ActiveLearner] | str:
        """The learners of the model's routed versions, loaded on first use.

        Args:
            model: The model an example names.
            partition: Where the example comes from (its learners are dropped
                when that partition is revoked).

        Returns:
            The learners, or why there is none (no deployment, unknown model, no
            version that can be learned); that answer is remembered for
            ``not_deployed_recheck_s`` (or until a registry event about the model).

        Raises:
            Unavailable: The registry did not answer.

        """
        routes = await self._routes_of(model)
        if isinstance(routes, str):
            return routes
        routes.partitions.add(partition)
        learners: list[ActiveLearner] = []
        reasons: list[str] = []
        for version in routes.versions:
            active = await self._learner(LearnerId(model, version))
            if isinstance(active, str):
                reasons.append(active)
            else:
                learners.append(active)
        return learners or "; ".join(reasons)

    async def _routes_of(self, model: str) -> ModelRoutes | str:
        routes = self._roster.routes.get(model)
        if routes is not None:
            return routes
        remembered = self._not_deployed.get(model, self._clock())
        if remembered is not None:
            return remembered
        deployment = await self._loader.deployment(model)
        if isinstance(deployment, str):
            self._not_deployed.put(model, deployment, self._clock())
            return deployment
        routes = ModelRoutes(routed_versions(deployment), deployment.revision)
        self._roster.routes[model] = routes
        return routes

    async def _learner(self, learner_id: LearnerId) -> ActiveLearner | str:
        active = self.find(learner_id.model, learner_id.version)
        if active is not None:
            return active
        remembered = self._not_deployed.get(str(learner_id), self._clock())
        if remembered is not None:
            return remembered
        loaded = await self._loader.load(learner_id)
        if isinstance(loaded, str):
            self._not_deployed.put(str(learner_id), loaded, self._clock())
            return loaded
        active = ActiveLearner(
            loaded,
            SaveState(sequence=self.index.max_sequence(learner_id.model)),
            self._checkpointer.track(loaded.learner),
        )
        self._roster.routed[learner_id] = active
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
        """Follow route changes: keep, rebase onto their own checkpoint, or retire learners.

        A newly routed version's learner is loaded at its first example. An event
        older than the deployment already applied (a lower revision) is ignored.
        """
        pending, self._pending = self._pending, {}
        for model, deployment in pending.items():
            routes = self._roster.routes.get(model)
            if routes is None or 0 < deployment.revision < routes.revision:
                continue
            self._follow(model, routes, routed_versions(deployment), deployment.revision)

    def _follow(
        self, model: str, routes: ModelRoutes, versions: dict[int, str], revision: int
    ) -> None:
        for version in versions:  # a route back before its learner's last save went out
            self._roster.revive(LearnerId(model, version))
        learning = {v: set(a.checkpoints.marks) for v, a in self._roster.of_model(model).items()}
        change = plan_route_change(learning, versions)
        for old, new in change.rebased:
            self._rebase(LearnerId(model, old), new)
        for old in change.retired:
            self._roster.retire(LearnerId(model, old))
        if versions:
            routes.versions, routes.revision = versions, revision
        else:  # no route left: the next example asks the registry again
            del self._roster.routes[model]
        log.info("routes changed", extra={"model": model, "routes": versions, "change": change})

    def _rebase(self, learner_id: LearnerId, version: int) -> None:
        active = self._roster.routed[learner_id]
        active.learner.rebase(version, active.checkpoints.marks[version])
        self._checkpointer.restart_after_rebase(active.checkpoints)
        active.saving.rebased()
        self._roster.rekey(learner_id, active)
        log.info("learner rebased", extra={"model": learner_id.model, "base_version": version})

    # -- saving -----------------------------------------------------------------------

    def due_updates(self, force: bool = False) -> list[LearnerId]:
        """Learners that should publish a ModelUpdate now (retiring ones: their last, at once)."""
        now = self._clock()
        interval_s = self.settings.sync_interval_ms / 1000
        due = [
            learner_id
            for learner_id, active in self._roster.routed.items()
            if active.saving.dirty and (force or now - active.saving.last_sync >= interval_s)
        ]
        return sorted(due) + self._roster.retiring_ids()

    async def build_update(self, learner_id: LearnerId) -> events_pb2.ModelUpdate:
        """Encode the learner's state and progress as its next (signed) ModelUpdate.

        The state is pickled, hashed and signed in worker threads, so call this
        only while no learner changes (the learning loop holds its lock around
        learning and saving): the snapshot is consistent with ``progress``.

        Raises:
            ModelNotFound: This trainer has no such learner (any more).

        """
        active = self._roster.saving(learner_id)
        if active is None:
            raise ModelNotFound(f"this trainer has no learner {learner_id}")
        progress = active.learner.progress()
        # reserved even if the send fails: sequences never repeat; above every sequence
        # of the model (published, or reserved by its other learners for updates in
        # flight), so they also increase across a model's rebased or new learners
        sequence = active.saving.reserve_sequence(self._model_sequence(learner_id.model))
        artifact = await asyncio.to_thread(self.codec.encode, active.learner.model)
        return await asyncio.to_thread(
            encode_update, learner_id.model, artifact, progress, sequence, self.codec, self._wall()
        )

    def _model_sequence(self, model: str) -> int:
        reserved = (a.sequence for a in self._roster.everyone() if a.learner.model_name == model)
        return max([self.index.max_sequence(model), *reserved])

    def saved(self, learner_id: LearnerId, update: events_pb2.ModelUpdate) -> None:
        """The update was acknowledged: the learner's consumption so far is safe."""
        self.index.record(update)
        metrics.MODEL_UPDATES.labels(model=learner_id.model).inc()
        active = self._roster.saving(learner_id)
        if active is None or active.learner_id != LearnerId(update.model, update.base_version):
            return
        active.saving.acknowledged(self._clock())
        if learner_id in self._roster.retiring:
            self._roster.stopped(learner_id)
        else:
            export_metrics(learner_id, active)

    def commit_offsets(self, processed: Mapping[TP, int]) -> dict[TP, int]:
        """Per partition, the offset the group may commit: nothing unsaved lies before it.

        Every learner counts, of every model, retiring ones included.
        """
        return self._roster.commit_offsets(processed)

    def drop(self, partitions: set[TP]) -> list[LearnerId]:
        """Forget the learners of the models whose examples come from ``partitions`` (revoked)."""
        return self._roster.drop(partitions)

    # -- checkpoints ------------------------------------------------------------------

    def due_checkpoints(self) -> list[LearnerId]:
        """Learners that have learned enough, or long enough, for a checkpoint."""
        return sorted(
            learner_id
            for learner_id, active in self._roster.routed.items()
            if self._checkpointer.is_due(active.learner, active.checkpoints)
        )

    def start_checkpoint(
        self, model: str, version: int | None = None
    ) -> asyncio.Task[registry_pb2.ModelVersion | None]:
        """Snapshot a learner now and register it as a version in the background.

        Args:
            model: The learner's model.
            version: Its version; None: the primary route's learner.

        The task's result is the new version, or None when the registry refused
        or could not be reached (``checkpoint_error`` says why; retried later).
        Registration is idempotent: see :mod:`headwater.services.trainer.learn.checkpoints`.

        Raises:
            ModelNotFound: This trainer has no such learner.

        """
        active = self.find(model, version)
        if active is None:
            which = "" if version is None else f" version {version}"
            raise ModelNotFound(f"this trainer has no learner for model {model!r}{which}")
        return self._checkpointer.take(model, active.loaded, active.checkpoints)

    async def stop_checkpoints(self, timeout_s: float) -> None:
        """Let checkpoints in flight finish within ``timeout_s``, then cancel them."""
        await drain_checkpoints(self._roster.checkpoint_states(), timeout_s)
