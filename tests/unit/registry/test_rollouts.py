"""The rollout state machine, each strategy's routes step by step, and the policy rules."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from headwater.services.registry import deployments, rollouts
from headwater.services.registry.deployments import Route
from headwater.services.registry.rollout_policy import (
    RolloutPolicy,
    validate_evidence,
    validate_policy,
    validate_reason,
)
from headwater.services.registry.rollouts import Rollout, apply, routes_at, start
from headwater.shared import enums
from headwater.shared.errors import FailedPrecondition, InvalidInput

POLICY = RolloutPolicy()
ALLOWED = {
    ("pending", "pause"): "paused",
    ("pending", "advance"): "progressing",
    ("pending", "promote"): "promoted",
    ("pending", "rollback"): "rolled_back",
    ("pending", "abort"): "aborted",
    ("progressing", "pause"): "paused",
    ("progressing", "advance"): "progressing",
    ("progressing", "promote"): "promoted",
    ("progressing", "rollback"): "rolled_back",
    ("progressing", "abort"): "aborted",
    ("paused", "resume"): "progressing",
    ("paused", "rollback"): "rolled_back",
    ("paused", "abort"): "aborted",
}
ACTIONS = ("pause", "resume", "advance", "promote", "rollback", "abort")
STATES = ("pending", "progressing", "paused", "promoted", "rolled_back", "aborted")


def canary(state: str = "progressing", step: int = 0, **policy: object) -> Rollout:
    return Rollout("m", "canary", 1, 2, RolloutPolicy(**policy), state, step)  # type: ignore[arg-type]


def assert_valid(routes: tuple[Route, ...]) -> None:
    """Every route set a rollout writes passes the deployment rules."""
    assert deployments.validate_routes(routes, "m", {1, 2}) == routes


def weights(routes: tuple[Route, ...] | None) -> list[tuple[int, float, str]]:
    assert routes is not None
    return [(r.version, round(r.weight, 12), r.role) for r in routes]


# --- the state machine ---------------------------------------------------------------


def test_the_names_match_the_protobuf_enums() -> None:
    assert rollouts.STATES == STATES
    assert rollouts.ACTIONS == ACTIONS
    assert rollouts.STRATEGIES == ("direct", "blue-green", "canary", "rolling", "shadow", "bandit")
    assert set(rollouts.TRANSITIONS) == set(STATES)
    assert rollouts.ACTIVE_STATES | rollouts.TERMINAL_STATES == set(STATES)
    assert "start" in enums.names(enums.ROLLOUT_ACTIONS)


@pytest.mark.parametrize(("state", "action"), sorted(ALLOWED))
def test_every_allowed_transition(state: str, action: str) -> None:
    move = apply(canary(state, step=1), action)
    assert move.rollout.state == ALLOWED[state, action]
    if move.routes is not None:
        assert_valid(move.routes)


REFUSED = [(s, a) for s in STATES for a in ACTIONS if (s, a) not in ALLOWED]


@pytest.mark.parametrize(("state", "action"), REFUSED)
def test_every_refused_transition_names_the_next_step(state: str, action: str) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        apply(canary(state, step=1), action)
    message = str(refused.value)
    assert message.startswith("rollout of 'm' is ")
    if state in rollouts.TERMINAL_STATES:
        assert f"already {state.replace('_', ' ')}: start a new one" in message
    elif state == "paused":
        assert message.endswith("paused: resume it or roll it back")
    else:
        assert message == f"rollout of 'm' is {state}, not paused: nothing to resume"


def test_pausing_twice_says_already_paused() -> None:
    with pytest.raises(FailedPrecondition, match="is already paused: resume it or roll it back"):
        apply(canary("paused"), "pause")


def test_pause_and_resume_keep_the_routes_and_the_step() -> None:
    paused = apply(canary(step=2), "pause")
    assert paused.routes is None and paused.rollout.step == 2
    resumed = apply(paused.rollout, "resume")
    assert resumed.routes is None and resumed.rollout == canary(step=2)


def test_a_switching_rollout_paused_before_its_switch_resumes_pending() -> None:
    pending = start("m", "blue-green", 1, 2, POLICY).rollout
    paused = apply(pending, "pause").rollout
    assert apply(paused, "resume").rollout.state == "pending"
    switched = apply(apply(pending, "advance").rollout, "pause").rollout
    assert apply(switched, "resume").rollout.state == "progressing"


def test_unknown_actions_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown action 'start'"):
        apply(canary(), "start")
    with pytest.raises(InvalidInput, match="action is required"):
        apply(canary(), "")


def test_start_refusals() -> None:
    with pytest.raises(InvalidInput, match="unknown strategy 'linear'"):
        start("m", "linear", 1, 2, POLICY)
    with pytest.raises(InvalidInput, match="'direct' needs no rollout"):
        start("m", "direct", 1, 2, POLICY)
    with pytest.raises(FailedPrecondition, match="version 1 is already the primary of 'm'"):
        start("m", "canary", 1, 1, POLICY)
    with pytest.raises(InvalidInput, match="invalid model name"):
        start("M M", "canary", 1, 2, POLICY)
    with pytest.raises(InvalidInput, match="alpha must be"):
        start("m", "canary", 1, 2, RolloutPolicy(alpha=0))


@pytest.mark.parametrize(
    ("strategy", "state"),
    [("canary", "progressing"), ("blue-green", "pending"), ("rolling", "pending"),
     ("shadow", "progressing"), ("bandit", "progressing")],
)  # fmt: skip
def test_start_states(strategy: str, state: str) -> None:
    move = start("m", strategy, 1, 2, POLICY)
    assert (move.rollout.state, move.rollout.step) == (state, 0)
    assert move.routes is not None
    assert_valid(move.routes)


# --- routes per strategy and step -----------------------------------------------------


def advance_all(rollout: Rollout, evidence: dict[str, float] | None = None) -> list[Rollout]:
    """Advance until refused; the positions visited, the start included."""
    seen = [rollout]
    while True:
        try:
            move = apply(seen[-1], "advance", evidence)
        except FailedPrecondition:
            return seen
        assert move.routes == routes_at(move.rollout, (evidence or {}).get("weight"))
        assert_valid(move.routes)
        seen.append(move.rollout)


def test_canary_walks_its_steps_then_must_be_promoted() -> None:
    first = start("m", "canary", 1, 2, RolloutPolicy(step_percents=(10.0, 60.0, 100.0)))
    assert weights(first.routes) == [(1, 0.9, "primary"), (2, 0.1, "canary")]
    path = advance_all(first.rollout)
    assert [r.step for r in path] == [0, 1, 2]
    assert [weights(routes_at(r)) for r in path[1:]] == [
        [(1, 0.4, "primary"), (2, 0.6, "canary")],
        [(1, 0.0, "primary"), (2, 1.0, "canary")],
    ]
    with pytest.raises(FailedPrecondition, match=r"at its last step \(100%\): promote it or roll"):
        apply(path[-1], "advance")


def test_default_canary_steps_are_5_25_50_100() -> None:
    path = advance_all(start("m", "canary", 1, 2, POLICY).rollout)
    assert [routes_at(r)[1].weight for r in path] == [0.05, 0.25, 0.5, 1.0]


@pytest.mark.parametrize("strategy", ["blue-green", "rolling"])
def test_blue_green_loads_the_candidate_then_switches_once(strategy: str) -> None:
    first = start("m", strategy, 1, 2, POLICY)
    assert weights(first.routes) == [(1, 1.0, "primary"), (2, 0.0, "challenger")]
    switched = apply(first.rollout, "advance")
    assert switched.rollout.state == "progressing" and switched.rollout.step == 1
    assert weights(switched.routes) == [(2, 1.0, "primary"), (1, 0.0, "challenger")]
    with pytest.raises(FailedPrecondition, match=r"v2 already: promote it \(drops v1\)"):
        apply(switched.rollout, "advance")
    assert weights(apply(switched.rollout, "rollback").routes) == [(1, 1.0, "primary")]
    assert weights(apply(switched.rollout, "promote").routes) == [(2, 1.0, "primary")]


def test_shadow_mirrors_then_advances_into_a_canary() -> None:
    first = start("m", "shadow", 1, 2, RolloutPolicy(shadow_percent=30, step_percents=(20, 100)))
    assert weights(first.routes) == [(1, 1.0, "primary"), (2, 0.3, "shadow")]
    path = advance_all(first.rollout)
    assert [weights(routes_at(r)) for r in path[1:]] == [
        [(1, 0.8, "primary"), (2, 0.2, "canary")],
        [(1, 0.0, "primary"), (2, 1.0, "canary")],
    ]
    assert weights(apply(first.rollout, "promote").routes) == [(2, 1.0, "primary")]


def test_bandit_takes_its_weight_from_the_controllers_evidence() -> None:
    first = start("m", "bandit", 1, 2, RolloutPolicy(bandit_floor_weight=0.1))
    assert weights(first.routes) == [(1, 0.5, "primary"), (2, 0.5, "canary")]
    moved = apply(first.rollout, "advance", {"weight": 0.9, "p_best": 0.99})
    assert weights(moved.routes) == [(1, 0.1, "primary"), (2, 0.9, "canary")]
    again = apply(moved.rollout, "advance", {"weight": 0.25})
    assert again.rollout.step == 2 and weights(again.routes)[1] == (2, 0.25, "canary")
    with pytest.raises(InvalidInput, match=r"needs evidence 'weight'.*in \[0.1, 0.9\]"):
        apply(moved.rollout, "advance", {"p_best": 0.5})
    with pytest.raises(InvalidInput, match=r"bandit weight 0.95 is outside \[0.1, 0.9\]"):
        apply(moved.rollout, "advance", {"weight": 0.95})


@pytest.mark.parametrize("strategy", ["canary", "blue-green", "rolling", "shadow", "bandit"])
def test_every_strategy_ends_with_one_version_alone(strategy: str) -> None:
    rollout = start("m", strategy, 1, 2, POLICY).rollout
    assert weights(apply(rollout, "promote").routes) == [(2, 1.0, "primary")]
    assert weights(apply(rollout, "rollback").routes) == [(1, 1.0, "primary")]
    assert weights(apply(rollout, "abort").routes) == [(1, 1.0, "primary")]
    paused = apply(rollout, "pause").rollout
    assert weights(apply(paused, "abort").routes) == [(1, 1.0, "primary")]


def test_last_steps() -> None:
    assert rollouts.last_step(canary()) == 3
    assert rollouts.last_step(Rollout("m", "blue-green", 1, 2)) == 1
    assert rollouts.last_step(Rollout("m", "shadow", 1, 2)) == 4
    assert rollouts.last_step(Rollout("m", "bandit", 1, 2)) is None


# --- errors naming the next step -----------------------------------------------------------


def test_errors_name_the_rollout_and_what_to_do() -> None:
    active = canary("progressing")
    assert "already progressing (canary of v2 over v1): promote it, roll it back or abort" in str(
        rollouts.already_active_error(active)
    )
    assert "abort the rollout first (headwater rollout abort m)" in str(
        rollouts.deployment_locked_error(active)
    )
    assert "headwater deploy m VERSION" in str(rollouts.no_deployment_error("m"))
    assert "has no rollout: start one" in str(rollouts.no_rollout_error("m"))
    stale = "is at revision 3 (progressing, step 0), not 2: read it again"
    with pytest.raises(FailedPrecondition, match=re.escape(stale)):
        rollouts.check_revision(active, 3, 2)
    rollouts.check_revision(active, 3, 3)
    rollouts.check_revision(active, 3, 0)
    assert "is not the active one: a canary of v2 over v1 is progressing" in str(
        rollouts.other_rollout_error("m", "r1", active)
    )


# --- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"step_percents": ()}, "at least one step"),
        ({"step_percents": tuple(range(1, 22))}, "at most 20 steps, got 21"),
        ({"step_percents": (0.0, 100.0)}, r"step 0% is not in \(0, 100\]"),
        ({"step_percents": (50.0, 150.0)}, r"step 150% is not in \(0, 100\]"),
        ({"step_percents": (math.nan, 100.0)}, r"step nan% is not in"),
        ({"step_percents": (10.0, 10.0, 100.0)}, "increase strictly, got 10% after 10%"),
        ({"step_percents": (10.0, 50.0)}, "last rollout step must be 100%, got 50%"),
        ({"interval_s": 0.0}, r"interval_s must be in \(0, 86400\], got 0"),
        ({"interval_s": math.nan}, "interval_s must be"),
        ({"min_samples": 0}, "min_samples must be >= 1, got 0"),
        ({"max_drop": -0.1}, "max_drop must be finite and >= 0"),
        ({"max_drop": math.inf}, "max_drop must be finite and >= 0"),
        ({"alpha": 0.0}, r"alpha must be in \(0, 0.5\]"),
        ({"shadow_percent": 0.0}, r"shadow_percent must be in \(0, 100\]"),
        ({"shadow_percent": 101.0}, r"shadow_percent must be in \(0, 100\]"),
        ({"bandit_floor_weight": 0.6}, r"bandit_floor_weight must be in \[0, 0.5\]"),
        ({"max_latency_ratio": 0.9}, "max_latency_ratio must be finite and >= 1"),
    ],
)
def test_invalid_policies(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_policy(dataclasses.replace(POLICY, **changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [{}, {"step_percents": (100.0,)}, {"step_percents": (0.5, 1.0, 100.0)}, {"max_drop": 0.0},
     {"max_drop": 3.5}, {"bandit_floor_weight": 0.0}, {"alpha": 0.5}, {"max_latency_ratio": 1.0}],
)  # fmt: skip
def test_valid_policies(changes: dict[str, object]) -> None:
    policy = dataclasses.replace(POLICY, **changes)  # type: ignore[arg-type]
    assert validate_policy(policy) == policy


def test_the_default_policy() -> None:
    assert POLICY == RolloutPolicy(
        step_percents=(5.0, 25.0, 50.0, 100.0), interval_s=60.0, min_samples=200, max_drop=0.01,
        alpha=0.05, shadow_percent=100.0, bandit_floor_weight=0.05, max_latency_ratio=1.5,
    )  # fmt: skip


def test_evidence_and_reason() -> None:
    assert validate_evidence({"n": 3}) == {"n": 3}
    with pytest.raises(InvalidInput, match="invalid evidence name 'a b'"):
        validate_evidence({"a b": 1.0})
    with pytest.raises(InvalidInput, match="invalid evidence name ''"):
        validate_evidence({"": 1.0})
    with pytest.raises(InvalidInput, match="at most 64 evidence entries"):
        validate_evidence({f"k{i}": 1.0 for i in range(65)})
    with pytest.raises(InvalidInput, match="evidence 'x' must be finite, got nan"):
        validate_evidence({"x": math.nan})
    assert validate_reason("canary lost") == "canary lost"
    with pytest.raises(InvalidInput, match="reason is longer than 1024"):
        validate_reason("x" * 1025)
