"""The learners the pool keeps: routed ones by id, retiring ones, each model's routes.

A :class:`Roster` is written only by the pool. A learner is *routed* while its
version has a route (every role); when the route goes it is *retiring*: it
learns nothing more (:meth:`Learner.pause`), its last ModelUpdate goes out,
then it is stopped (a checkpoint registration it had in flight is still let
finish). Its gauges go with it.

>>> roster = Roster()
>>> roster.routes["m"] = ModelRoutes({1: "primary"}, revision=3)
>>> roster.primary("m"), roster.find(LearnerId("m", 1)), roster.retiring_ids()
(1, None, [])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from headwater.services.trainer import metrics
from headwater.services.trainer.learn.active import TP, ActiveLearner
from headwater.services.trainer.learn.checkpoints import CheckpointState
from headwater.services.trainer.learn.routes import LearnerId, primary_of

log = logging.getLogger(__name__)


@dataclass
class ModelRoutes:
    """A model's routed versions as last applied, and the partitions its examples came from.

    Attributes:
        versions: Each routed version with its role's name.
        revision: The deployment's revision (0: unknown).
        partitions: Where the model's examples were read from (its learners go
            when one of them is revoked).

    """

    versions: dict[int, str]
    revision: int
    partitions: set[TP] = field(default_factory=set)


class Roster:
    """The pool's learners and routes (see the module's docstring); written only by the pool."""

    def __init__(self) -> None:
        self.routed: dict[LearnerId, ActiveLearner] = {}
        self.retiring: dict[LearnerId, ActiveLearner] = {}
        self.routes: dict[str, ModelRoutes] = {}
        self._stopping: list[CheckpointState] = []

    def find(self, learner_id: LearnerId) -> ActiveLearner | None:
        """The routed learner ``learner_id``, None when there is none."""
        return self.routed.get(learner_id)

    def primary(self, model: str) -> int | None:
        """The version of the model's primary route, None when unknown."""
        routes = self.routes.get(model)
        return primary_of(routes.versions) if routes is not None else None

    def role(self, learner_id: LearnerId) -> str:
        """The role of the learner's route."""
        return self.routes[learner_id.model].versions[learner_id.version]

    def of_model(self, model: str) -> dict[int, ActiveLearner]:
        """The model's routed learners, by version."""
        return {i.version: a for i, a in self.routed.items() if i.model == model}

    def everyone(self) -> list[ActiveLearner]:
        """Every learner, routed and retiring."""
        return [*self.routed.values(), *self.retiring.values()]

    def saving(self, learner_id: LearnerId) -> ActiveLearner | None:
        """A learner that may have something to save: routed, or retiring."""
        active = self.find(learner_id)
        return active if active is not None else self.retiring.get(learner_id)

    def retiring_ids(self) -> list[LearnerId]:
        """The retiring learners, sorted."""
        return sorted(self.retiring)

    def rekey(self, old: LearnerId, active: ActiveLearner) -> None:
        """File a routed learner under its id again (after a rebase changed its version)."""
        del self.routed[old]
        forget_metrics(old, active)
        self.routed[active.learner_id] = active

    def retire(self, learner_id: LearnerId) -> None:
        """Its route is gone: it learns nothing more; stopped at once if it has nothing to save."""
        active = self.routed.pop(learner_id)
        forget_metrics(learner_id, active)
        active.learner.pause()
        self.retiring[learner_id] = active
        log.info("learner retiring", extra={"learner": str(learner_id)})
        if not active.saving.dirty:
            self.stopped(learner_id)

    def revive(self, learner_id: LearnerId) -> None:
        """Its route is back before its last save went out: routed again, state kept."""
        active = self.retiring.pop(learner_id, None)
        if active is not None:
            self.routed[learner_id] = active

    def stopped(self, learner_id: LearnerId) -> None:
        """The retiring learner's last save is acknowledged: it goes."""
        self._let_finish(self.retiring.pop(learner_id))
        log.info("learner stopped", extra={"learner": str(learner_id)})

    def drop(self, partitions: set[TP]) -> list[LearnerId]:
        """Forget the learners and routes of the models read from ``partitions`` (revoked)."""
        models = {m for m, routes in self.routes.items() if routes.partitions & partitions}
        models |= {
            a.learner.model_name for a in self.everyone() if a.learner.partitions() & partitions
        }
        gone = sorted(i for i in [*self.routed, *self.retiring] if i.model in models)
        for learner_id in gone:
            active = self.routed.pop(learner_id, None) or self.retiring.pop(learner_id)
            forget_metrics(learner_id, active)
            self._let_finish(active)
        for model in models:
            self.routes.pop(model, None)
        return gone

    def commit_offsets(self, processed: Mapping[TP, int]) -> dict[TP, int]:
        """Per partition, the offset the group may commit: nothing unsaved lies before it."""
        offsets = dict(processed)
        for active in self.everyone():
            for tp, first in active.saving.unsaved_from.items():
                if tp in offsets:
                    offsets[tp] = min(offsets[tp], first)
        return offsets

    def checkpoint_states(self) -> list[CheckpointState]:
        """The checkpoint states of every learner, and of stopped ones still registering."""
        return [a.checkpoints for a in self.everyone()] + self._stopping

    def _let_finish(self, active: ActiveLearner) -> None:
        self._stopping = [state for state in self._stopping if state.busy]
        if active.checkpoints.busy:  # a registration in flight finishes (or is drained)
            self._stopping.append(active.checkpoints)


def export_metrics(learner_id: LearnerId, active: ActiveLearner) -> None:
    """Set the learner's gauges (after a save): examples learned and its metrics."""
    model, version = learner_id.model, str(learner_id.version)
    learner = active.learner
    metrics.LEARNER_EXAMPLES.labels(model=model, version=version).set(learner.examples_learned)
    for name, value in learner.metrics().items():
        if name != "examples":
            metrics.LEARNER_METRIC.labels(model=model, version=version, metric=name).set(value)


def forget_metrics(learner_id: LearnerId, active: ActiveLearner) -> None:
    """Remove the gauges of a learner that stops or changes version."""
    model, version = learner_id.model, str(learner_id.version)
    with contextlib.suppress(KeyError):
        metrics.LEARNER_EXAMPLES.remove(model, version)
    for name in active.learner.metrics():
        with contextlib.suppress(KeyError):
            metrics.LEARNER_METRIC.remove(model, version, name)
