"""The evaluation reporter: every learner's progressive-validation metrics to the registry.

A background task, never on the learning loop's path: every
``evaluation_interval_s`` it collects the metrics of each routed learner that
scored something since its last report (reading a learner between two examples,
on the event loop: no lock, no copy of its state) into the pool's
:class:`~headwater.services.trainer.learn.evaluations.EvaluationOutbox`, then
sends what waits there with ``RecordEvaluation`` (source ``trainer``), each
call with the registry client's deadline. A checkpoint's evaluations wake it
at once (:mod:`.checkpoints` puts them).

When the registry does not answer (or a call fails otherwise), the rest of
the round is skipped, the failure is logged once (again when reports go
through), and what waits is sent at the next round: newer measurements of the
same version and metric replace it meanwhile, so nothing piles up. An
evaluation the registry refuses (e.g. a version it does not have) is dropped,
logged and counted: sending it again would be refused again. The learners
never wait for any of it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from headwater.services.trainer import metrics
from headwater.services.trainer.learn.evaluations import (
    SOURCE,
    LearnerEvaluation,
    learner_evaluations,
)
from headwater.services.trainer.learn.pool import LearnerPool
from headwater.services.trainer.learn.routes import LearnerId
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.errors import HeadwaterError, Unavailable
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)

#: Most RecordEvaluation calls in flight at once.
MAX_CALLS_IN_FLIGHT = 8


@dataclass(frozen=True)
class _Reported:
    """When a learner's evaluations were last collected (monotonic), and what they said."""

    at: float
    measured: tuple[int, tuple[tuple[str, float], ...]]


class EvaluationReporter:
    """Reports the pool's learners' metrics to the registry: ``start()``, then ``stop()``.

    Args:
        settings: The report interval.
        registry: Where evaluations are recorded (its deadline bounds every call).
        pool: The learners, and the outbox their checkpoints put evaluations in.
        clock: Monotonic seconds (the interval).
        wall: Wall-clock seconds (when a metric was measured).

    """

    def __init__(
        self,
        settings: TrainerSettings,
        registry: RegistryClient,
        pool: LearnerPool,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._interval_s = settings.evaluation_interval_s
        self._registry = registry
        self._pool = pool
        self._outbox = pool.evaluations
        self._clock = clock
        self._wall = wall
        self._reported: dict[LearnerId, _Reported] = {}
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Report in the background."""
        self._task = asyncio.create_task(self._run(), name="trainer-evaluations")

    async def stop(self, grace_s: float) -> None:
        """Stop the rounds; then report every learner's latest metrics, within ``grace_s``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            async with asyncio.timeout(grace_s):
                self.collect(force=True)
                await self.flush()
        except TimeoutError:
            log.warning("evaluations not reported within the grace")

    async def _run(self) -> None:
        while True:
            await self._outbox.wait(self._interval_s)
            try:
                self.collect()
                await self.flush()
            except Exception:  # a bug must not end the reports: log it, report again
                log.exception("evaluation round failed")

    def collect(self, force: bool = False) -> None:
        """Put the evaluations of every learner due in the outbox.

        A learner is due when it has metrics that changed since its last
        report, at least ``evaluation_interval_s`` ago (``force``: whenever they changed).
        """
        now, reported = self._clock(), {}
        for routed in self._pool.learners():
            learner_id, learner = routed.learner_id, routed.active.learner
            measured = (learner.scored, tuple(sorted(learner.metrics().items())))
            last = self._reported.get(learner_id)
            if last is not None and (
                last.measured == measured or (not force and now - last.at < self._interval_s)
            ):
                reported[learner_id] = last
                continue
            evaluations = learner_evaluations(
                learner_id.model, learner_id.version, dict(measured[1]), learner.scored,
                self._wall(),
            )  # fmt: skip
            if evaluations:
                self._outbox.put(evaluations, wake=False)
                reported[learner_id] = _Reported(now, measured)
        self._reported = reported  # a learner gone is forgotten

    async def flush(self) -> None:
        """Send what waits in the outbox; what could not be sent waits for the next round."""
        waiting = self._outbox.waiting()
        if not waiting:
            return
        limit = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)
        failures: list[Exception] = []
        await asyncio.gather(*(self._send(e, limit, failures) for e in waiting))
        if failures:
            self._failed(failures[0], len(failures))
        elif self._failing:
            log.info("evaluations reported again", extra={"target": self._registry.target})
            self._failing = False

    async def _send(
        self, evaluation: LearnerEvaluation, limit: asyncio.Semaphore, failures: list[Exception]
    ) -> None:
        async with limit:
            if failures:  # the registry failed another call of this round: wait for the next
                return
            try:
                await self._record(evaluation)
            except Unavailable as err:
                failures.append(err)
                return self._count(evaluation, "failed")
            except HeadwaterError as err:  # refused: the same again would be refused again
                log.warning("evaluation refused", extra={**_extra(evaluation), "error": str(err)})
                self._outbox.done(evaluation)
                return self._count(evaluation, "refused")
            except Exception as err:  # a bug: logged (once), tried again at the next round
                failures.append(err)
                return self._count(evaluation, "failed")
        self._outbox.done(evaluation)
        self._count(evaluation, "recorded")

    async def _record(self, evaluation: LearnerEvaluation) -> None:
        await self._registry.record_evaluation(
            evaluation.model,
            evaluation.version,
            SOURCE,
            evaluation.metric,
            evaluation.value,
            examples=evaluation.examples,
            at=dt.datetime.fromtimestamp(evaluation.at, dt.UTC),
        )

    def _count(self, evaluation: LearnerEvaluation, outcome: str) -> None:
        metrics.EVALUATIONS.labels(model=evaluation.model, outcome=outcome).inc()

    def _failed(self, err: Exception, count: int) -> None:
        if self._failing:
            return
        self._failing = True
        log.warning(
            "evaluations not reported: tried again at the next round",
            extra={"target": self._registry.target, "failed": count, "error": repr(err)},
            exc_info=None if isinstance(err, Unavailable) else err,
        )


def _extra(evaluation: LearnerEvaluation) -> dict[str, object]:
    return {"model": evaluation.model, "version": evaluation.version, "metric": evaluation.metric}
