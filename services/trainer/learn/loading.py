"""Where a learner starts from: its version's artifact, or its latest ModelUpdate.

:class:`LearnerLoader` asks the registry for a model's deployment (which
versions it routes to), and for each routed version verifies and unpickles its
artifact, then restores the learner's state and positions from that learner's
latest ModelUpdate (same model, same base version) if it has one: a
:class:`LoadedLearner`, which the pool keeps next to its own save state and the
checkpointer's state. :class:`NotLearnable` remembers, for a while, why a model
(or one of its versions) has no learner.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from headwater.services.trainer.learn.convert import learner_kind
from headwater.services.trainer.learn.learner import Learner, LearnerKind, Progress
from headwater.services.trainer.learn.routes import LearnerId, routed_versions
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import (
    ArtifactIntegrityError,
    InvalidInput,
    ModelNotFound,
    NotFound,
)
from headwater.shared.features import FeatureSchema
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)

#: Most model names remembered as having no learner (the topic is open to any name).
NOT_DEPLOYED_CACHE_SIZE = 256


@dataclass(frozen=True)
class LoadedLearner:
    """A version's learner as loaded, with what its base version says; written once, by the loader.

    The :class:`Learner` itself then changes only through the pool (learn,
    skip, rebase).

    Attributes:
        learner: The learner, on its base version's artifact or its saved state.
        spec_json: The base version's spec (checkpoints carry it on).
        seed: The base version's seed (checkpoints carry it on).
        schema: The model's features, which every example is checked against.

    """

    learner: Learner
    spec_json: str
    seed: int
    schema: FeatureSchema


class NotLearnable:
    """Why a model, or one of its versions, has no learner; remembered a while, ``size`` at most.

    Keyed by a model name, or by a :class:`LearnerId`'s ``str()``, ``"model/version"``
    (model names have no slash, so the two never meet); least recently used first out.

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
        """Ask the registry again next time, for the model and its versions (a registry event).

        >>> cache = NotLearnable(ttl_s=5.0, size=4)
        >>> cache.put("a", "not deployed", now=0.0); cache.put("a/2", "broken", now=0.0)
        >>> cache.put("ab/2", "broken", now=0.0); cache.forget("a"); len(cache)
        1
        """
        for key in [k for k in self._entries if k == model or k.startswith(f"{model}/")]:
            del self._entries[key]


@dataclass(frozen=True)
class _Base:
    """The deployed version a learner starts from, as the registry gave it."""

    kind: LearnerKind
    info: registry_pb2.Model
    found: registry_pb2.GetArtifactResponse
    estimator: object


class LearnerLoader:
    """Loads the learners of a model's routed versions, each restored from its last update.

    Args:
        settings: De-duplication and metric windows of new learners.
        registry: Where deployments, models and artifacts come from.
        codec: Verifies artifacts and saved states.
        index: The latest ModelUpdate of each learner.

    """

    def __init__(
        self,
        settings: TrainerSettings,
        registry: RegistryClient,
        codec: ArtifactCodec,
        index: UpdateIndex,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._codec = codec
        self._index = index

    async def deployment(self, model: str) -> registry_pb2.Deployment | str:
        """The model's deployment, or why there is none (not deployed, no route).

        Raises:
            Unavailable: The registry did not answer.

        """
        try:
            deployment = await self._registry.get_deployment(model)
        except (ModelNotFound, NotFound) as err:
            return f"model {model!r} is not deployed: {err}"
        if not routed_versions(deployment):
            return f"model {model!r} is not deployed: its deployment has no route"
        return deployment

    async def load(self, learner_id: LearnerId) -> LoadedLearner | str:
        """The learner of a routed version, or why there is none (it cannot be learned).

        Raises:
            Unavailable: The registry did not answer.

        """
        model, version = learner_id.model, learner_id.version
        base = await self._fetch(learner_id)
        if isinstance(base, str):
            return base
        estimator, progress = await self.restore(learner_id, base.estimator)
        learner = Learner(
            model,
            base.kind,
            base_version=version,
            model=estimator,
            progress=progress,
            dedupe_ids=self._settings.dedupe_ids,
            metric_window=self._settings.metric_window,
        )
        log.info(
            "learner started",
            extra={"model": model, "base_version": version, "restored": progress is not None},
        )
        return LoadedLearner(
            learner,
            spec_json=base.found.version.spec_json,
            seed=base.found.version.lineage.seed,
            schema=FeatureSchema.from_proto(base.info),
        )

    async def _fetch(self, learner_id: LearnerId) -> _Base | str:
        model, version = learner_id.model, learner_id.version
        try:
            info = await self._registry.get_model(model)
            kind = learner_kind(info.task)
            found = await self._registry.get_artifact(model, version)
            artifact = found.version.artifact
            # verified and unpickled in a worker thread: the join's agents share this loop
            estimator = await asyncio.to_thread(
                self._codec.decode, found.content, artifact.signature, artifact.sha256
            )
        except (ModelNotFound, NotFound) as err:
            return f"version {version} of model {model!r} is not deployed: {err}"
        except (InvalidInput, ArtifactIntegrityError) as err:
            log.error(
                "cannot learn this version",
                extra={"model": model, "version": version, "error": str(err)},
            )
            return f"version {version} of model {model!r} cannot be learned: {err}"
        return _Base(kind, info, found, estimator)

    async def restore(self, learner_id: LearnerId, base: object) -> tuple[object, Progress | None]:
        """The state and progress of the learner's latest update if it has one, else ``base``.

        The index holds only verified updates (one signature over state digest,
        offsets, counts and progress): the state is checked against its digest
        again and unpickled in a worker thread, the progress taken as saved.
        """
        saved = self._index.latest(learner_id.model, learner_id.version)
        if saved is None:
            return base, None
        update = saved.update
        try:
            state = await asyncio.to_thread(
                self._codec.decode_addressed, update.state, update.sha256
            )
        except ArtifactIntegrityError as err:
            log.error(
                "saved learner state refused",
                extra={"model": learner_id.model, "version": learner_id.version, "error": str(err)},
            )
            return base, None
        return state, saved.progress
