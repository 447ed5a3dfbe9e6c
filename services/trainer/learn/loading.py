"""Where a learner starts from: the registry's deployed artifact, or its latest ModelUpdate.

:class:`LearnerLoader` asks the registry which version a model's deployment
routes to, verifies and unpickles that artifact, and restores the learner's
state and positions from the model's latest ModelUpdate when it was saved on
the same base version: a :class:`LoadedLearner`, which the pool keeps next to
its own save state and the checkpointer's state. :class:`NotLearnable`
remembers, for a while, why a model has no learner.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from headwater.services.trainer.learn.convert import learner_kind, primary_version
from headwater.services.trainer.learn.learner import Learner, LearnerKind, Progress
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
    """A model's learner as loaded, with what its base version says; written once, by the loader.

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


@dataclass(frozen=True)
class _Base:
    """The deployed version a learner starts from, as the registry gave it."""

    version: int
    kind: LearnerKind
    info: registry_pb2.Model
    found: registry_pb2.GetArtifactResponse
    estimator: object


class LearnerLoader:
    """Loads a model's learner from the registry and restores it from its last update.

    Args:
        settings: De-duplication and metric windows of new learners.
        registry: Where deployments, models and artifacts come from.
        codec: Verifies artifacts and saved states.
        index: The latest ModelUpdate of each model.

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

    async def load(self, model: str) -> LoadedLearner | str:
        """The model's learner, or why there is none (not deployed, cannot be learned).

        Raises:
            Unavailable: The registry did not answer.

        """
        base = await self._fetch(model)
        if isinstance(base, str):
            return base
        estimator, progress = await self.restore(model, base.version, base.estimator)
        learner = Learner(
            model,
            base.kind,
            base_version=base.version,
            model=estimator,
            progress=progress,
            dedupe_ids=self._settings.dedupe_ids,
            metric_window=self._settings.metric_window,
        )
        log.info(
            "learner started",
            extra={"model": model, "base_version": base.version, "restored": progress is not None},
        )
        return LoadedLearner(
            learner,
            spec_json=base.found.version.spec_json,
            seed=base.found.version.lineage.seed,
            schema=FeatureSchema.from_proto(base.info),
        )

    async def _fetch(self, model: str) -> _Base | str:
        try:
            version = primary_version(await self._registry.get_deployment(model))
            if version is None:
                return f"model {model!r} is not deployed: its deployment has no route"
            info = await self._registry.get_model(model)
            kind = learner_kind(info.task)
            found = await self._registry.get_artifact(model, version)
            artifact = found.version.artifact
            # verified and unpickled in a worker thread: the join's agents share this loop
            estimator = await asyncio.to_thread(
                self._codec.decode, found.content, artifact.signature, artifact.sha256
            )
        except (ModelNotFound, NotFound) as err:
            return f"model {model!r} is not deployed: {err}"
        except (InvalidInput, ArtifactIntegrityError) as err:
            log.error("cannot learn this model", extra={"model": model, "error": str(err)})
            return f"model {model!r} cannot be learned: {err}"
        return _Base(version, kind, info, found, estimator)

    async def restore(
        self, model: str, version: int, base: object
    ) -> tuple[object, Progress | None]:
        """The saved state and progress when the latest update is on ``version``, else ``base``.

        The index holds only verified updates (one signature over state digest,
        offsets, counts and progress): the state is checked against its digest
        again and unpickled in a worker thread, the progress taken as saved.
        """
        saved = self._index.latest(model)
        if saved is None or saved.update.base_version != version:
            return base, None
        update = saved.update
        try:
            state = await asyncio.to_thread(
                self._codec.decode_addressed, update.state, update.sha256
            )
        except ArtifactIntegrityError as err:
            log.error("saved learner state refused", extra={"model": model, "error": str(err)})
            return base, None
        return state, saved.progress
