"""Learners' evaluations to a fake registry: cadence, checkpoints, outages, refusals."""

from __future__ import annotations

import logging

import pytest
from river import linear_model

from headwater.services.trainer.learn.evaluations import learner_evaluations
from headwater.services.trainer.learn.learner import Example, Learner, Position
from headwater.services.trainer.learn.reporter import EvaluationReporter
from headwater.shared.errors import ModelNotFound, Unavailable
from tests.fixtures import eventually
from tests.unit.trainer.learn.conftest import FakeRegistry, feed, make_pool


class EvaluatedRegistry(FakeRegistry):
    """The fake registry, keeping the evaluations recorded; failures can be queued."""

    def __init__(self) -> None:
        super().__init__()
        self.deployed = 1
        self.recorded: list[dict] = []
        self.evaluation_failures: list[Exception] = []
        self.target = "fake:1"

    async def record_evaluation(self, model, version, source, metric, value, **kwargs) -> None:
        if self.evaluation_failures:
            raise self.evaluation_failures.pop(0)
        self.recorded.append(
            {"model": model, "version": version, "source": source, "metric": metric,
             "value": value, **kwargs}
        )  # fmt: skip

    def latest(self) -> dict[tuple[int, str], tuple[float, int]]:
        """(version, metric) -> (value, examples) of the last evaluation recorded."""
        return {(r["version"], r["metric"]): (r["value"], r["examples"]) for r in self.recorded}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reporter_of(pool, registry, clock, interval_s: float = 10.0) -> EvaluationReporter:
    settings = pool.settings.model_copy(update={"evaluation_interval_s": interval_s})
    return EvaluationReporter(settings, registry, pool, clock=clock)  # type: ignore[arg-type]


async def test_each_learner_reports_for_its_version_at_most_every_interval() -> None:
    registry, clock = EvaluatedRegistry(), Clock()
    pool = make_pool(registry)
    reporter = reporter_of(pool, registry, clock)
    await feed(pool, range(20))
    learner = pool.find("m").learner

    reporter.collect()
    await reporter.flush()

    measured = learner.metrics()
    assert registry.latest() == {
        (1, "accuracy"): (measured["accuracy"], learner.scored),
        (1, "rolling_accuracy"): (measured["rolling_accuracy"], learner.scored),
    }
    assert {r["source"] for r in registry.recorded} == {"trainer"}
    assert learner.scored == 20
    assert registry.recorded[0]["at"].tzinfo is not None

    await feed(pool, range(20, 30))
    clock.now = 9.0
    reporter.collect()
    await reporter.flush()
    assert len(registry.recorded) == 2  # not due before the interval
    clock.now = 10.0
    reporter.collect()
    await reporter.flush()
    assert len(registry.recorded) == 4 and registry.latest()[(1, "accuracy")][1] == 30
    clock.now = 25.0
    reporter.collect()
    await reporter.flush()
    assert len(registry.recorded) == 4  # nothing new learned: nothing sent


async def test_a_checkpoint_reports_its_snapshot_for_both_versions() -> None:
    registry, clock = EvaluatedRegistry(), Clock()
    pool = make_pool(registry)
    reporter = reporter_of(pool, registry, clock)
    await feed(pool, range(12))
    at_snapshot = dict(pool.find("m").learner.metrics())
    scored_at_snapshot = pool.find("m").learner.scored
    task = pool.start_checkpoint("m")
    await feed(pool, range(12, 40))  # learning goes on while the checkpoint registers
    version = await task
    assert version is not None and version.version == 2

    await reporter.flush()  # the checkpoint's evaluations, without waiting for a round

    for v in (1, 2):
        assert registry.latest()[(v, "accuracy")] == (at_snapshot["accuracy"], scored_at_snapshot)
        assert registry.latest()[(v, "rolling_accuracy")][0] == at_snapshot["rolling_accuracy"]
    reporter.collect()
    await reporter.flush()  # the learner's own report is newer: version 1 moves on, 2 stays
    assert registry.latest()[(1, "accuracy")][1] == pool.find("m").learner.scored
    assert registry.latest()[(2, "accuracy")][1] == scored_at_snapshot


async def test_a_checkpoint_wakes_the_reporter_and_learning_never_waits_for_it() -> None:
    registry, clock = EvaluatedRegistry(), Clock()
    pool = make_pool(registry)
    reporter = reporter_of(pool, registry, clock, interval_s=60.0)
    await feed(pool, range(5))
    reporter.start()
    try:
        await pool.start_checkpoint("m")

        async def sent() -> bool:
            return {v for v, _ in registry.latest()} == {1, 2}

        await eventually(sent, timeout_s=5, what="both versions")  # long before the 60 s round
        registry.evaluation_failures = [Unavailable("down")] * 100
        await pool.start_checkpoint("m")  # reports fail: the learners go on
        assert await feed(pool, range(5, 10))
    finally:
        await reporter.stop(grace_s=0.5)


async def test_an_unreachable_registry_is_logged_once_and_the_newest_sent_next_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, clock = EvaluatedRegistry(), Clock()
    pool = make_pool(registry)
    reporter = reporter_of(pool, registry, clock)
    await feed(pool, range(10))
    registry.evaluation_failures = [Unavailable("down")] * 2  # one per round
    with caplog.at_level(logging.INFO, logger="headwater.services.trainer.learn.reporter"):
        reporter.collect()
        await reporter.flush()
        await feed(pool, range(10, 20))
        clock.now = 10.0
        reporter.collect()  # replaces what waits
        await reporter.flush()
        assert registry.recorded == []
        clock.now = 20.0
        reporter.collect()
        await reporter.flush()
    assert registry.latest() == {
        (1, "accuracy"): (pool.find("m").learner.metrics()["accuracy"], 20),
        (1, "rolling_accuracy"): (pool.find("m").learner.metrics()["rolling_accuracy"], 20),
    }
    assert len(registry.recorded) == 2  # only the newest of each metric
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("evaluations not reported: tried again at the next round") == 1
    assert "evaluations reported again" in messages


async def test_a_refused_evaluation_is_dropped_not_retried() -> None:
    registry, clock = EvaluatedRegistry(), Clock()
    pool = make_pool(registry)
    reporter = reporter_of(pool, registry, clock)
    await feed(pool, range(10))
    registry.evaluation_failures = [ModelNotFound("no version 1")]
    reporter.collect()
    await reporter.flush()
    await reporter.flush()
    assert [r["metric"] for r in registry.recorded] == ["rolling_accuracy"]  # accuracy dropped


def test_a_regressor_reports_mae_and_rolling_mae_over_its_scored_examples() -> None:
    learner = Learner("m", "regressor", base_version=3, model=linear_model.LinearRegression())
    for i in range(6):
        learner.process(Example(f"e{i}", {"x": float(i)}, 2.0 * i), Position("ex", 0, i))

    evaluations = learner_evaluations("m", 3, learner.metrics(), learner.scored, at=1.0)

    assert [(e.metric, e.examples, e.version) for e in evaluations] == [
        ("mae", 6, 3), ("rolling_mae", 6, 3)]  # fmt: skip
    assert [e.value for e in evaluations] == [learner.metrics()["mae"]] * 2
    assert learner_evaluations("m", 3, {"examples": 0.0}, 0, at=1.0) == ()
