"""The rollout controller's core on a fake clock: what it judges, what it asks the registry."""

from __future__ import annotations

import dataclasses
import random

from headwater.services.monitor.canary import Action
from headwater.services.monitor.domain import ExampleObserved, PredictionObserved, Severity
from headwater.services.monitor.rollout_controller import RolloutController, Transition
from headwater.services.monitor.rollouts import JudgingPolicy, TrackedRollout
from headwater.services.monitor.statistics import Task

CLS = Task.CLASSIFICATION
FAST = JudgingPolicy(step_percents=(50.0, 100.0), interval_s=0.5, min_samples=30)
OWNED = frozenset({0})


def canary(strategy: str = "canary", policy: JudgingPolicy = FAST, **changes) -> TrackedRollout:
    values = {"state": "progressing", "created_at": 100.0, "step_started_at": 100.0, **changes}
    return TrackedRollout("r1", "churn", strategy, baseline_version=1, candidate_version=2,
                          policy=policy, **values)  # fmt: skip


def example(version: int, correct: bool, role: str = "", predicted_at: float | None = None):
    return ExampleObserved(
        "churn", version, CLS, True, correct, route_role=role, predicted_at=predicted_at
    )


def serve(
    controller: RolloutController,
    rng: random.Random,
    p_candidate: float,
    p_baseline: float,
    n: int = 40,
    candidate_role: str = "canary",
) -> None:
    """n labelled examples per arm on partition 0 (the baseline answered as primary)."""
    for _ in range(n):
        controller.observe_example(example(1, rng.random() < p_baseline, "primary"), partition=0)
        controller.observe_example(
            example(2, rng.random() < p_candidate, candidate_role), partition=0
        )


def registry_accepts(transition: Transition, now: float) -> TrackedRollout:
    """What the registry answers to an accepted transition of a canary or shadow."""
    rollout, action = transition.rollout, transition.action
    if action is Action.ADVANCE:
        return dataclasses.replace(
            rollout, step=rollout.step + 1, revision=rollout.revision + 1, step_started_at=now
        )
    state = "promoted" if action is Action.PROMOTE else "rolled_back"
    return dataclasses.replace(rollout, state=state, revision=rollout.revision + 1)


def run(controller: RolloutController, p_candidate: float, p_baseline: float, **serving):
    """Serve, look every second, accept every decision; the accepted transitions in order."""
    rng, accepted, now = random.Random(7), [], 100.0
    for _ in range(30):
        serve(controller, rng, p_candidate, p_baseline, **serving)
        now += 1.0
        for transition in controller.decide(now, OWNED):
            controller.accepted(transition, registry_accepts(transition, now), now)
            accepted.append(transition)
        if not controller.snapshot(OWNED).rollouts["churn"].rollout.active:
            break
    return accepted


def test_a_worse_candidate_is_rolled_back_with_its_evidence_and_revision() -> None:
    controller = RolloutController()
    controller.track(canary(revision=4))
    serve(controller, random.Random(1), p_candidate=0.3, p_baseline=0.9, n=200)

    (rollback,) = controller.decide(now=101.0, owned_partitions=OWNED)

    assert rollback.action is Action.ROLLBACK and rollback.expected_revision == 4
    assert rollback.rollout.rollout_id == "r1"
    evidence = rollback.evidence
    assert evidence["samples_candidate"] == evidence["samples_baseline"] == 200
    assert evidence["accuracy_candidate"] < 0.5 < evidence["accuracy_baseline"]
    assert evidence["p_value"] <= 0.05
    alert = controller.accepted(rollback, registry_accepts(rollback, 101.0), now=101.0)
    assert (alert.kind, alert.severity, alert.version) == ("rollout.rollback", Severity.WARNING, 2)
    assert alert.values["p_value"] == evidence["p_value"]
    snapshot = controller.snapshot(OWNED)
    assert snapshot.decisions == {("churn", "rollback"): 1}
    view = snapshot.rollouts["churn"]
    assert view.rollout.state == "rolled_back" and not view.judged
    assert view.last_decision is not None and view.last_decision.decision is rollback.decision
    assert controller.decide(now=102.0, owned_partitions=OWNED) == ()  # nothing left to judge


def test_a_better_candidate_advances_step_by_step_then_is_promoted() -> None:
    controller = RolloutController()
    controller.track(canary())

    accepted = run(controller, p_candidate=0.9, p_baseline=0.85)

    assert [t.action for t in accepted] == [Action.ADVANCE, Action.PROMOTE]
    advance, promote = accepted
    assert (advance.expected_revision, promote.expected_revision) == (1, 2)
    assert advance.evidence["step_percent"] == 50.0 and promote.evidence["step_percent"] == 100.0
    assert promote.evidence["step_samples_candidate"] >= 30
    assert promote.evidence["samples_candidate"] > advance.evidence["samples_candidate"]
    decisions = controller.snapshot(OWNED).decisions
    assert decisions == {("churn", "advance"): 1, ("churn", "promote"): 1}


def test_a_refused_decision_holds_until_the_registry_rollout_moves() -> None:
    controller = RolloutController()
    controller.track(canary(revision=3))
    serve(controller, random.Random(2), p_candidate=0.2, p_baseline=0.9, n=200)
    (rollback,) = controller.decide(now=101.0, owned_partitions=OWNED)

    controller.refused(rollback)  # e.g. an operator paused it at revision 4
    assert controller.models_to_refresh() == ("churn",)
    assert controller.decide(now=102.0, owned_partitions=OWNED) == ()  # no blind retry
    assert "refused" in controller.snapshot(OWNED).rollouts["churn"].note

    controller.track(canary(revision=3))  # re-read: unchanged, still held
    assert controller.models_to_refresh() == ()
    assert controller.decide(now=103.0, owned_partitions=OWNED) == ()
    paused = canary(revision=4, state="paused")
    controller.track(paused)
    assert controller.decide(now=104.0, owned_partitions=OWNED) == ()  # paused: not judged
    controller.track(canary(revision=5, step_started_at=105.0))  # resumed
    (again,) = controller.decide(now=106.0, owned_partitions=OWNED)
    assert again.action is Action.ROLLBACK and again.expected_revision == 5


def test_a_paused_rollout_is_not_judged_but_its_evidence_accrues() -> None:
    controller = RolloutController()
    controller.track(canary(state="paused", revision=2))
    serve(controller, random.Random(3), p_candidate=0.9, p_baseline=0.9, n=40)
    assert controller.decide(now=110.0, owned_partitions=OWNED) == ()
    view = controller.snapshot(OWNED).rollouts["churn"]
    assert not view.judged and view.note.startswith("paused") and view.latest is None

    controller.track(canary(revision=3, step_started_at=120.0))  # resumed: the step restarts
    assert controller.decide(now=120.2, owned_partitions=OWNED) == ()
    latest = controller.snapshot(OWNED).rollouts["churn"].latest
    assert latest is not None and latest.decision.action is Action.CONTINUE
    assert latest.decision.evidence["samples_candidate"] == 40  # kept across the pause
    assert latest.decision.evidence["step_samples_candidate"] == 0


def test_only_the_replica_owning_the_models_examples_partition_decides() -> None:
    controller = RolloutController()
    controller.track(canary())
    serve(controller, random.Random(4), p_candidate=0.1, p_baseline=0.9, n=200)
    assert controller.decide(now=101.0, owned_partitions=frozenset({1})) == ()
    assert not controller.snapshot(frozenset({1})).rollouts["churn"].acting
    assert len(controller.decide(now=101.0, owned_partitions=frozenset({0, 1}))) == 1


def test_a_shadow_is_scored_on_its_copies_and_advanced_into_a_canary() -> None:
    controller = RolloutController()
    controller.track(canary("shadow"))
    rng = random.Random(5)
    for _ in range(40):
        controller.observe_example(example(1, True, "primary"), partition=0)
        controller.observe_example(example(2, rng.random() < 0.9, "shadow"), partition=0)
        controller.observe_example(example(1, False, "shadow"), partition=0)  # never the baseline

    (advance,) = controller.decide(now=101.0, owned_partitions=OWNED)

    assert advance.action is Action.ADVANCE
    assert advance.evidence["step_percent"] == 0.0 and advance.evidence["step_index"] == 0
    assert advance.evidence["samples_candidate"] == advance.evidence["samples_baseline"] == 40
    assert advance.evidence["accuracy_baseline"] == 1.0
    controller.accepted(advance, registry_accepts(advance, 101.0), now=101.0)
    serve(controller, rng, p_candidate=0.95, p_baseline=0.95)  # now a canary at 50 %
    (next_step,) = controller.decide(now=102.0, owned_partitions=OWNED)
    assert next_step.action is Action.ADVANCE and next_step.evidence["step_percent"] == 50.0


def test_a_canary_ignores_shadow_copies_and_examples_served_before_it_began() -> None:
    controller = RolloutController()
    controller.track(canary())
    for _ in range(40):
        controller.observe_example(example(2, False, "shadow"), partition=0)
        controller.observe_example(example(2, False, "canary", predicted_at=99.0), partition=0)
        controller.observe_example(example(2, True, "canary", predicted_at=100.5), partition=0)
    controller.observe_prediction(PredictionObserved("churn", 2, 5.0, route_role="canary"))
    assert controller.snapshot(OWNED).rollouts["churn"].latest is None
    assert controller.decide(now=100.6, owned_partitions=OWNED) == ()
    latest = controller.snapshot(OWNED).rollouts["churn"].latest
    assert latest is not None
    evidence = latest.decision.evidence
    assert evidence["samples_candidate"] == 40 and evidence["accuracy_candidate"] == 1.0
    assert evidence["latency_samples_candidate"] == 1


def test_a_bandit_advances_with_the_candidates_weight_at_its_cadence() -> None:
    policy = JudgingPolicy(interval_s=2.0, bandit_floor_weight=0.05)
    controller = RolloutController(bandit_draws=500)
    controller.track(canary("bandit", policy=policy))
    rng, weights, now = random.Random(6), [], 100.0
    assert controller.decide(now=103.0, owned_partitions=OWNED) == ()  # no labels yet
    for _ in range(6):
        serve(controller, rng, p_candidate=0.9, p_baseline=0.5, n=30, candidate_role="canary")
        assert controller.decide(now + 1.0, OWNED) == ()  # within the interval
        now += 2.0
        (advance,) = controller.decide(now, OWNED)
        assert advance.action is Action.ADVANCE
        weight = advance.evidence["weight"]
        assert weight == min(max(advance.evidence["weight_v2"], 0.05), 0.95)  # the floor
        weights.append(weight)
        accepted = registry_accepts(advance, now)
        controller.accepted(advance, accepted, now)
    assert weights[-1] == 0.95  # converged to the better version, the floor left to explore
    assert controller.snapshot(OWNED).decisions == {("churn", "advance"): 6}


def test_blue_green_is_shown_not_judged_and_first_seen_models_are_refreshed() -> None:
    controller = RolloutController()
    controller.observe_prediction(PredictionObserved("churn", 1, 3.0))
    controller.observe_example(example(1, True), partition=0)
    controller.observe_example(ExampleObserved("fraud", 1, CLS, True, None), partition=1)
    assert controller.models_to_refresh() == ("churn", "fraud")
    controller.no_rollout("fraud")
    controller.track(canary("blue-green", state="pending"))
    assert controller.models_to_refresh() == ()
    serve(controller, random.Random(8), p_candidate=0.1, p_baseline=0.9, n=100)
    assert controller.decide(now=200.0, owned_partitions=frozenset({0, 1})) == ()
    view = controller.snapshot(OWNED).rollouts["churn"]
    assert not view.judged and "not judged" in view.note


def test_a_late_event_of_an_older_revision_or_rollout_is_ignored() -> None:
    controller = RolloutController()
    assert controller.track(canary(revision=3, step=1))
    assert not controller.track(canary(revision=2, step=0))
    older = dataclasses.replace(canary(), rollout_id="r0", created_at=50.0, state="rolled_back")
    assert not controller.track(older)
    newer = dataclasses.replace(canary(), rollout_id="r2", created_at=150.0)
    assert controller.track(newer)
    assert controller.snapshot(OWNED).rollouts["churn"].rollout.rollout_id == "r2"


def test_someone_elses_advance_moves_the_judge_along() -> None:
    controller = RolloutController()
    controller.track(canary())
    serve(controller, random.Random(9), p_candidate=0.9, p_baseline=0.9, n=10)
    controller.track(canary(revision=2, step=1, step_started_at=100.2))  # `rollout advance`
    serve(controller, random.Random(9), p_candidate=0.9, p_baseline=0.9, n=10)
    controller.decide(now=100.3, owned_partitions=OWNED)
    latest = controller.snapshot(OWNED).rollouts["churn"].latest
    assert latest is not None and latest.decision.evidence["step_percent"] == 100.0
    assert latest.decision.evidence["samples_candidate"] == 20


GATE = (
    "version 2 of 'churn' cannot be promoted: gate min_score failed: accuracy 0.81 < 0.85 "
    "required (short by 0.04) over 1200 examples (headwater gates show churn)"
)


def test_a_promotion_refused_by_a_gate_blocks_the_rollout_without_hammering() -> None:
    controller = RolloutController(blocked_retry_s=30.0)
    last_step = canary(revision=5, step=1)  # at 100 %: the next decision is PROMOTE
    controller.track(last_step)
    serve(controller, random.Random(10), p_candidate=0.95, p_baseline=0.9, n=40)
    (promote,) = controller.decide(now=101.0, owned_partitions=OWNED)
    assert promote.action is Action.PROMOTE

    controller.refused(promote, GATE)
    assert controller.decide(now=101.5, owned_partitions=OWNED) == ()  # re-reading it first
    controller.reread(last_step, now=102.0)  # still at revision 5: a gate, not a stale revision
    view = controller.snapshot(OWNED).rollouts["churn"]
    assert view.judged and view.blocked is not None
    assert (view.blocked.action, view.blocked.revision, view.blocked.message) == (
        Action.PROMOTE, 5, GATE)  # fmt: skip
    assert (view.blocked.since, view.blocked.retry_at, view.blocked.refusals) == (102.0, 132.0, 1)
    (alert,) = controller.drain_alerts()
    assert (alert.kind, alert.version, alert.severity) == ("rollout.blocked", 2, Severity.WARNING)
    assert alert.message == f"churn: canary of v2 over v1: promote blocked: {GATE}"
    assert alert.values["step_percent"] == 100.0
    assert controller.models_to_refresh() == ()

    for now in (103.0, 110.0, 131.9):  # held: no decision every tick
        assert controller.decide(now=now, owned_partitions=OWNED) == ()
    (retry,) = controller.decide(now=132.0, owned_partitions=OWNED)
    assert retry.action is Action.PROMOTE and retry.expected_revision == 5
    controller.refused(retry, GATE.replace("0.81", "0.82").replace("0.04", "0.03"))
    controller.reread(last_step, now=132.5)
    assert controller.drain_alerts() == []  # the same reason: alerted once
    blocked = controller.snapshot(OWNED).rollouts["churn"].blocked
    assert blocked is not None and (blocked.refusals, blocked.since) == (2, 102.0)
    assert "0.82" in blocked.message
    assert controller.snapshot(OWNED).blocked == {("churn", "promote"): 2}

    assert controller.decide(now=133.0, owned_partitions=OWNED) == ()
    controller.gates_changed("churn")  # e.g. an operator lowered the threshold
    (at_once,) = controller.decide(now=133.5, owned_partitions=OWNED)
    controller.refused(at_once, "version 2 of 'churn' cannot be promoted: gate min_examples failed")
    controller.reread(last_step, now=134.0)
    assert [a.kind for a in controller.drain_alerts()] == ["rollout.blocked"]  # a new reason

    (accepted,) = controller.decide(now=164.0, owned_partitions=OWNED)
    controller.accepted(accepted, registry_accepts(accepted, 164.0), now=164.0)
    view = controller.snapshot(OWNED).rollouts["churn"]
    assert view.rollout.state == "promoted" and view.blocked is None


def test_a_refusal_read_back_at_a_new_revision_is_stale_not_blocked() -> None:
    controller = RolloutController()
    controller.track(canary(revision=5, step=1))
    serve(controller, random.Random(11), p_candidate=0.95, p_baseline=0.9, n=40)
    (promote,) = controller.decide(now=101.0, owned_partitions=OWNED)
    controller.refused(promote, "rollout of 'churn' is at revision 6 (paused)")
    controller.reread(canary(revision=6, step=1, state="paused"), now=102.0)
    view = controller.snapshot(OWNED).rollouts["churn"]
    assert view.blocked is None and view.note.startswith("paused")
    assert controller.drain_alerts() == [] and controller.snapshot(OWNED).blocked == {}
