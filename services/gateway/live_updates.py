"""Live mode: verify the learners' ModelUpdates, decide what each one means, swap them in.

Every routed version (primary, canary, shadow, challenger) has its own learner,
which publishes :class:`ModelUpdate` messages (state, ``base_version`` = the
version it learns for, increasing ``sequence``, all under one signature:
:mod:`headwater.shared.model_updates`). Every update is verified (in a worker
thread) before any field of it is used; one that does not verify is refused,
logged, counted and handed back to the consumer to dead-letter. A verified
update is swapped into the version it names when that version is routed live
and its sequence is newer than the one served (:func:`plan_update`), so each
version serves its own learner's state. Only the signed fields count: the
record key (the trainer's ``"{model}/{base_version}"``, or the model name of an
older trainer) is never read. The newest verified update of each learner
(model, base version) is remembered by the cache, so an update that arrives
before its deployment is applied when that deployment is installed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from headwater.services.gateway.model_cache import ModelCache, ModelEntry, ServedVersion
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import ArtifactIntegrityError
from headwater.shared.model_updates import verify_update
from headwater.shared.pb import events_pb2

log = logging.getLogger(__name__)

#: Awaited with the reason when an offered update is refused (the consumer dead-letters it).
OnRefused = Callable[[str], Awaitable[None]]


class UpdatePlan(enum.Enum):
    """What to do with a live update."""

    APPLY = "apply"
    STALE = "stale"  # not newer than the one served
    NOT_DEPLOYED = "not_deployed"  # model or base version not served (kept for later)
    PINNED = "pinned"  # the deployment is pinned to its artifact
    REFUSED = "refused"  # does not verify


def plan_update(entry: ModelEntry | None, update: events_pb2.ModelUpdate) -> UpdatePlan:
    """Decide what to do with a verified update, given the model's served entry.

    >>> plan_update(None, events_pb2.ModelUpdate(model="m", base_version=1, sequence=2))
    <UpdatePlan.NOT_DEPLOYED: 'not_deployed'>
    """
    if entry is None or update.base_version not in entry.versions:
        return UpdatePlan.NOT_DEPLOYED
    if not entry.live:
        return UpdatePlan.PINNED
    if update.sequence <= entry.versions[update.base_version].live_sequence:
        return UpdatePlan.STALE
    return UpdatePlan.APPLY


class LiveUpdater:
    """Verifies live updates, then decodes and swaps them into a :class:`ModelCache`.

    Args:
        cache: The cache to update.
        codec: Verifies signatures and decodes model state.

    Attributes:
        counts: How many updates ended in each :class:`UpdatePlan`.

    """

    def __init__(self, cache: ModelCache, codec: ArtifactCodec) -> None:
        self.cache = cache
        self.codec = codec
        self.counts: dict[UpdatePlan, int] = dict.fromkeys(UpdatePlan, 0)

    async def offer(
        self, update: events_pb2.ModelUpdate, on_refused: OnRefused | None = None
    ) -> UpdatePlan:
        """Verify an update (once, off the event loop), remember it, swap it in if it applies.

        The signature and the state's digest are checked in a worker thread
        before any field of the update is looked at; a remembered update is not
        verified again when it is applied later.

        Args:
            update: The update as decoded from its record.
            on_refused: Awaited with the reason when the update does not verify
                (or its state does not unpickle into a model) before REFUSED is returned.

        """
        try:
            await asyncio.to_thread(verify_update, self.codec, update)
        except ArtifactIntegrityError as error:
            return await self._refuse(update, error, on_refused)
        plan = plan_update(self.cache.find(update.model), update)
        if plan is not UpdatePlan.APPLY:
            self.cache.remember(update)
            return self._count(plan)
        try:
            estimator = await asyncio.to_thread(self._decode, update)
        except ArtifactIntegrityError as error:
            return await self._refuse(update, error, on_refused)
        self.cache.remember(update)
        return self._swap(update, estimator)

    async def apply_pending(self, name: str) -> None:
        """Apply each version's remembered update (after its deployment is installed)."""
        for update in self.cache.pending_updates(name):
            plan = plan_update(self.cache.find(name), update)
            if plan is not UpdatePlan.APPLY:
                self._count(plan)
                continue
            try:
                estimator = await asyncio.to_thread(self._decode, update)
            except ArtifactIntegrityError as error:
                await self._refuse(update, error, None)
                continue
            self._swap(update, estimator)

    def _decode(self, update: events_pb2.ModelUpdate) -> Any:
        """Runs in a worker thread: unpickle the state of a verified update."""
        return self.codec.decode_addressed(update.state, update.sha256)

    async def _refuse(
        self,
        update: events_pb2.ModelUpdate,
        error: ArtifactIntegrityError,
        on_refused: OnRefused | None,
    ) -> UpdatePlan:
        self._count(UpdatePlan.REFUSED)
        log.error(
            "live update refused",
            extra={"model": update.model, "sequence": update.sequence, "reason": str(error)},
        )
        if on_refused is not None:
            await on_refused(str(error))
        return UpdatePlan.REFUSED

    def _swap(self, update: events_pb2.ModelUpdate, estimator: Any) -> UpdatePlan:
        """Serve ``estimator`` if the update still applies (the deployment may have changed)."""
        plan = plan_update(self.cache.find(update.model), update)
        if plan is not UpdatePlan.APPLY:
            return self._count(plan)
        served = ServedVersion(update.base_version, estimator, update.sequence)
        self.cache.swap_version(update.model, served)
        log.info(
            "live update swapped in",
            extra={
                "model": update.model,
                "base_version": update.base_version,
                "sequence": update.sequence,
            },
        )
        return self._count(UpdatePlan.APPLY)

    def _count(self, plan: UpdatePlan) -> UpdatePlan:
        self.counts[plan] += 1
        return plan
