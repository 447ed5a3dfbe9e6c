"""The learners' progressive-validation metrics as registry evaluations, waiting to be sent.

The registry's promotion gates judge a version by its latest progressive-validation
score. The learner of version V reports for V (source ``trainer``): ``accuracy``
and ``rolling_accuracy`` for a classifier, ``mae`` and ``rolling_mae`` for a
regressor, each with ``examples`` = the predictions it scored since V. A
checkpoint V' registered from it holds the state the learner had at the snapshot,
so V' starts with the learner's metrics at that snapshot (and the learner's own
report for V at that moment goes out too).

Nothing here does I/O: the learning loop's side (the reporter's collection, the
checkpointer) only puts values in an :class:`EvaluationOutbox`, which keeps the
newest per (model, version, metric) until
:class:`~headwater.services.trainer.learn.reporter.EvaluationReporter` has sent it.

>>> outbox = EvaluationOutbox()
>>> taken = learner_evaluations(
...     "churn", 3, {"accuracy": 0.9, "rolling_accuracy": 0.8, "examples": 50.0}, 48, at=10.0)
>>> [(e.metric, e.value, e.examples) for e in taken]
[('accuracy', 0.9, 48), ('rolling_accuracy', 0.8, 48)]
>>> outbox.put(taken); outbox.put(for_version(taken, 4))
>>> outbox.put(learner_evaluations("churn", 3, {"accuracy": 0.7}, 40, at=9.0))  # older: kept out
>>> [(e.version, e.metric, e.value) for e in outbox.waiting()]  # doctest: +NORMALIZE_WHITESPACE
[(3, 'accuracy', 0.9), (3, 'rolling_accuracy', 0.8),
 (4, 'accuracy', 0.9), (4, 'rolling_accuracy', 0.8)]
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The source the trainer's evaluations are recorded under.
SOURCE = "trainer"
#: The learner metrics reported (the ``examples`` count rides along with each).
REPORTED_METRICS = frozenset({"accuracy", "rolling_accuracy", "mae", "rolling_mae"})


@dataclass(frozen=True)
class LearnerEvaluation:
    """One metric of one version, as a learner measured it.

    Attributes:
        model: The model.
        version: The version it belongs to (the learner's base version, or its checkpoint).
        metric: ``accuracy``, ``rolling_accuracy``, ``mae`` or ``rolling_mae``.
        value: The metric's value.
        examples: Predictions scored behind it (since the learner's base version).
        at: When it was measured (wall-clock seconds).

    """

    model: str
    version: int
    metric: str
    value: float
    examples: int
    at: float

    @property
    def key(self) -> tuple[str, int, str]:
        """What a newer evaluation replaces: (model, version, metric)."""
        return self.model, self.version, self.metric


def learner_evaluations(
    model: str, version: int, metrics: Mapping[str, float], scored: int, at: float
) -> tuple[LearnerEvaluation, ...]:
    """The evaluations of a learner's ``metrics`` (``Learner.metrics()``) for ``version``.

    Empty while the learner has scored nothing (it has no metric yet).
    """
    return tuple(
        LearnerEvaluation(model, version, name, value, scored, at)
        for name, value in sorted(metrics.items())
        if name in REPORTED_METRICS
    )


def for_version(
    evaluations: Iterable[LearnerEvaluation], version: int
) -> tuple[LearnerEvaluation, ...]:
    """The same measurements, as the evaluations of ``version`` (a checkpoint of that state)."""
    return tuple(dataclasses.replace(e, version=version) for e in evaluations)


class EvaluationOutbox:
    """Evaluations waiting to be sent: the newest per (model, version, metric).

    Written on the event loop by the learners' side, read by the reporter; a
    newer measurement replaces a waiting one, an older one is kept out.
    """

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, int, str], LearnerEvaluation] = {}
        self._woken = asyncio.Event()

    def put(self, evaluations: Iterable[LearnerEvaluation], wake: bool = True) -> None:
        """Hold ``evaluations`` until sent; ``wake`` the reporter (else: sent on its tick)."""
        added = False
        for evaluation in evaluations:
            held = self._waiting.get(evaluation.key)
            if held is None or held.at <= evaluation.at:
                self._waiting[evaluation.key] = evaluation
                added = True
        if added and wake:
            self._woken.set()

    def waiting(self) -> list[LearnerEvaluation]:
        """What is waiting, by model, version and metric."""
        return [self._waiting[key] for key in sorted(self._waiting)]

    def done(self, evaluation: LearnerEvaluation) -> None:
        """``evaluation`` was sent (or given up): forget it, unless a newer one took its place."""
        if self._waiting.get(evaluation.key) is evaluation:
            del self._waiting[evaluation.key]

    async def wait(self, timeout_s: float) -> None:
        """Return when something was put with ``wake``, or after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._woken.wait()
        except TimeoutError:
            pass
        self._woken.clear()
