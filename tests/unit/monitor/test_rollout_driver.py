"""The rollout driver's ticks against a fake registry: refreshes, decisions, refusals, outages."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from headwater.services.monitor.domain import AlertRaised, ExampleObserved
from headwater.services.monitor.rollout_controller import RolloutController
from headwater.services.monitor.rollout_driver import RolloutDriver
from headwater.services.monitor.settings import MonitorSettings
from headwater.services.monitor.statistics import Task
from headwater.shared import enums
from headwater.shared.errors import FailedPrecondition, ModelNotFound, Unavailable
from headwater.shared.pb import events_pb2, registry_pb2

R = registry_pb2


def canary_proto(revision: int = 1, state: int = R.ROLLOUT_STATE_PROGRESSING) -> R.Rollout:
    rollout = R.Rollout(
        id="r1", model="churn", strategy=R.ROLLOUT_STRATEGY_CANARY, state=state,
        baseline_version=1, candidate_version=2, revision=revision,
    )  # fmt: skip
    rollout.policy.step_percents.extend([50.0, 100.0])
    rollout.policy.interval_s, rollout.policy.min_samples = 0.5, 30
    rollout.policy.max_drop, rollout.policy.alpha = 0.01, 0.05
    rollout.policy.bandit_floor_weight, rollout.policy.max_latency_ratio = 0.05, 1.5
    rollout.created_at.FromSeconds(100)
    rollout.step_started_at.FromSeconds(100)
    return rollout


def rollout_changed(rollout: R.Rollout) -> events_pb2.RegistryEvent:
    kind = events_pb2.REGISTRY_EVENT_KIND_ROLLOUT_CHANGED
    return events_pb2.RegistryEvent(kind=kind, model=rollout.model, rollout=rollout)


class FakeRegistry:
    """Answers GetRollout and TransitionRollout like the registry; failures can be queued."""

    target = "fake:1"

    def __init__(self, rollouts: dict[str, R.Rollout]) -> None:
        self.rollouts = rollouts
        self.gets: list[str] = []
        self.transitions: list[dict[str, Any]] = []
        self.failures: list[Exception] = []

    async def get_rollout(self, model: str) -> R.Rollout:
        self.gets.append(model)
        if self.failures:
            raise self.failures.pop(0)
        if model not in self.rollouts:
            raise ModelNotFound(f"model {model!r} has no rollout")
        return self.rollouts[model]

    async def transition_rollout(self, model: str, action: str, **request: Any) -> R.Rollout:
        self.transitions.append({"model": model, "action": action, **request})
        if self.failures:
            raise self.failures.pop(0)
        current = self.rollouts[model]
        if request["expected_revision"] != current.revision:
            raise FailedPrecondition(f"rollout of {model!r} is at revision {current.revision}")
        after = R.Rollout()
        after.CopyFrom(current)
        after.revision += 1
        after.state = {"rollback": R.ROLLOUT_STATE_ROLLED_BACK}.get(action, current.state)
        self.rollouts[model] = after
        return after


class Driver:
    """A driver on a fake registry with a fixed clock; its alerts collected."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.controller = RolloutController()
        self.alerts: list[AlertRaised] = []
        self.now = 200.0
        self.driver = RolloutDriver(
            MonitorSettings(),
            self.controller,
            registry,  # type: ignore[arg-type]
            self.alerts.append,
            lambda: frozenset({0}),
            lambda: self.now,
        )

    def serve_a_worse_candidate(self) -> None:
        for i in range(200):
            baseline = ExampleObserved("churn", 1, Task.CLASSIFICATION, True, True)
            candidate = ExampleObserved("churn", 2, Task.CLASSIFICATION, True, i % 4 == 0)
            self.controller.observe_example(baseline, partition=0)
            self.controller.observe_example(candidate, partition=0)


async def test_first_seen_models_are_read_once_and_a_loser_is_rolled_back() -> None:
    registry = FakeRegistry({"churn": canary_proto(revision=3)})
    fake = Driver(registry)
    fake.controller.observe_example(
        ExampleObserved("fraud", 1, Task.CLASSIFICATION, True, None), partition=0
    )
    fake.serve_a_worse_candidate()  # before its rollout is known: seen, not judged
    await fake.driver.tick()
    assert sorted(registry.gets) == ["churn", "fraud"] and registry.transitions == []

    fake.serve_a_worse_candidate()
    await fake.driver.tick()

    (call,) = registry.transitions
    assert (call["action"], call["expected_revision"], call["rollout_id"]) == ("rollback", 3, "r1")
    assert call["evidence"]["p_value"] <= 0.05 and "worse" in call["reason"]
    (alert,) = fake.alerts
    assert alert.kind == "rollout.rollback" and alert.values["samples_candidate"] == 200
    assert fake.driver.snapshot().decisions == {("churn", "rollback"): 1}
    await fake.driver.tick()
    assert sorted(registry.gets) == ["churn", "fraud"] and len(registry.transitions) == 1


async def test_an_unreachable_registry_is_logged_once_and_retried_next_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = FakeRegistry({"churn": canary_proto()})
    fake = Driver(registry)
    fake.driver.on_registry_event(rollout_changed(canary_proto()))
    fake.serve_a_worse_candidate()
    registry.failures = [Unavailable("down"), Unavailable("still down")]
    with caplog.at_level(logging.INFO, logger="headwater.services.monitor.rollout_driver"):
        await fake.driver.tick()
        await fake.driver.tick()
        assert fake.alerts == [] and registry.gets == []  # the event told the rollout
        await fake.driver.tick()
    assert [t["action"] for t in registry.transitions] == ["rollback"] * 3
    assert len(fake.alerts) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("registry unreachable: rollouts wait, retried every tick") == 1
    assert "registry reachable again" in messages


async def test_registry_events_are_followed_and_late_copies_ignored() -> None:
    fake = Driver(FakeRegistry({}))
    first = canary_proto(revision=2)
    fake.driver.on_registry_event(rollout_changed(first))
    second = canary_proto(revision=1)
    second.id = "r2"
    second.created_at.FromSeconds(300)
    fake.driver.on_registry_event(rollout_changed(second))
    fake.driver.on_registry_event(rollout_changed(canary_proto(revision=3)))  # late: r1
    deployment = events_pb2.RegistryEvent(
        kind=events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED, model="churn"
    )
    fake.driver.on_registry_event(deployment)

    view = fake.driver.snapshot().rollouts["churn"]
    assert (view.rollout.rollout_id, view.rollout.revision) == ("r2", 1)
    assert enums.STRATEGIES[R.ROLLOUT_STRATEGY_CANARY] == view.rollout.strategy
    await fake.driver.tick()
    assert fake.registry.gets == []  # the events told the rollout: nothing to read


async def test_a_refused_transition_is_followed_by_a_fresh_read() -> None:
    registry = FakeRegistry({"churn": canary_proto(revision=1)})
    fake = Driver(registry)
    fake.controller.observe_example(
        ExampleObserved("churn", 1, Task.CLASSIFICATION, True, True), partition=0
    )
    await fake.driver.tick()  # first seen: reads the rollout (revision 1)
    fake.serve_a_worse_candidate()
    registry.rollouts["churn"] = canary_proto(revision=2, state=R.ROLLOUT_STATE_PAUSED)

    await fake.driver.tick()  # decides on revision 1: refused, read again

    assert registry.gets == ["churn", "churn"]
    assert [t["expected_revision"] for t in registry.transitions] == [1]
    view = fake.driver.snapshot().rollouts["churn"]
    assert view.rollout.state == "paused" and view.rollout.revision == 2
    await fake.driver.tick()
    assert len(registry.transitions) == 1 and fake.alerts == []


class GatedRegistry(FakeRegistry):
    """Refuses every promote with a gate's message while ``gate`` is set, like the registry."""

    gate = "version 2 of 'churn' cannot be promoted: gate min_score failed: accuracy 0.8 < 0.85"

    async def transition_rollout(self, model: str, action: str, **request: Any) -> R.Rollout:
        if action == "promote" and self.gate:
            self.transitions.append({"model": model, "action": action, **request})
            raise FailedPrecondition(self.gate)
        return await super().transition_rollout(model, action, **request)


async def test_a_gated_promotion_is_held_alerted_once_and_retried_when_the_gates_change() -> None:
    last_step = canary_proto(revision=4)
    last_step.step = 1  # at 100 %: the candidate is ready to be promoted
    registry = GatedRegistry({"churn": last_step})
    fake = Driver(registry)
    fake.driver.on_registry_event(rollout_changed(last_step))
    for i in range(60):
        fake.controller.observe_example(
            ExampleObserved("churn", 2, Task.CLASSIFICATION, True, i % 10 != 0), partition=0
        )

    for _ in range(5):  # refused at once, then held: one call, not one per tick
        await fake.driver.tick()
        fake.now += 1.0
    assert [t["action"] for t in registry.transitions] == ["promote"]
    assert registry.gets == ["churn"]  # read back once: still at revision 4, so blocked
    (alert,) = fake.alerts
    assert alert.kind == "rollout.blocked" and registry.gate in alert.message
    view = fake.driver.snapshot()
    blocked = view.rollouts["churn"].blocked
    assert blocked is not None and blocked.message == registry.gate
    assert view.blocked == {("churn", "promote"): 1}

    fake.now += 30.0  # the retry interval: tried again, the same reason is not alerted again
    await fake.driver.tick()
    assert len(registry.transitions) == 2 and len(fake.alerts) == 1

    registry.gate = ""
    gates_changed = events_pb2.RegistryEvent(
        kind=events_pb2.REGISTRY_EVENT_KIND_PROMOTION_GATES_CHANGED, model="churn"
    )
    fake.driver.on_registry_event(gates_changed)
    await fake.driver.tick()  # at once, not 30 s later
    assert [t["action"] for t in registry.transitions] == ["promote"] * 3
    assert [a.kind for a in fake.alerts] == ["rollout.blocked", "rollout.promote"]
    assert fake.driver.snapshot().rollouts["churn"].blocked is None
