"""Rollouts: the state machine, the policy rules and each strategy's routes (pure, no I/O).

A rollout moves a model's traffic from its deployed primary (the *baseline*)
to a *candidate* version. Its states::

    pending ─▶ progressing ⇄ paused ─▶ promoted | rolled_back | aborted

``pending``: the candidate is loaded but serves nothing yet (blue/green and
rolling start there; the other strategies start ``progressing``). ``paused``
holds the rollout where it is: nothing moves forward until ``resume``, but
``rollback`` and ``abort`` still do. The last three states are terminal; a
model has at most one rollout that is not.

The routes each strategy puts in the deployment, step by step (the baseline
``b``, the candidate ``c``; weights in parentheses):

============  ===========================================  ===================================
strategy      start                                        advance
============  ===========================================  ===================================
canary        b primary (1 - s0), c canary (s0)            step k: c canary (sk), b the rest
blue-green    b primary (1), c challenger (0): loaded,     the atomic switch: c primary (1),
              learning, no traffic                         b challenger (0) for instant rollback
rolling       as blue-green                                one gateway replica reporting c
                                                           ready now answers with c (see
                                                           :mod:`.replicas`); the one switching
                                                           the last live replica: as blue-green
shadow        b primary (1), c shadow (shadow_percent)     a canary at s0, then the steps
bandit        b primary (0.5), c canary (0.5)              c canary (the controller's weight)
============  ===========================================  ===================================

``promote`` leaves the candidate alone as primary (1); ``rollback`` and
``abort`` leave the baseline alone as primary (1). ``s0, s1, …`` are the
policy's ``step_percents`` / 100.

>>> move = start("churn", "canary", 1, 2, RolloutPolicy())
>>> move.rollout.state, move.routes
('progressing', (Route(version=1, weight=0.95, role='primary'), \
Route(version=2, weight=0.05, role='canary')))
>>> move = apply(move.rollout, "advance")
>>> move.rollout.step, move.routes[1]
(1, Route(version=2, weight=0.25, role='canary'))
>>> apply(move.rollout, "promote").routes
(Route(version=2, weight=1.0, role='primary'),)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from headwater.services.registry.deployments import Route
from headwater.services.registry.domain import validate_choice, validate_model_name
from headwater.services.registry.rollout_policy import RolloutPolicy, validate_policy
from headwater.shared import enums
from headwater.shared.errors import FailedPrecondition, InvalidInput, NotFound

STRATEGIES = enums.names(enums.STRATEGIES)
STATES = enums.names(enums.ROLLOUT_STATES)
#: What TransitionRollout accepts ("start" is StartRollout's alone).
ACTIONS = tuple(a for a in enums.names(enums.ROLLOUT_ACTIONS) if a != "start")
TERMINAL_STATES = frozenset({"promoted", "rolled_back", "aborted"})
ACTIVE_STATES = frozenset({"pending", "progressing", "paused"})
#: Strategies that load the candidate without traffic, then switch at once.
SWITCHING_STRATEGIES = frozenset({"blue-green", "rolling"})
#: state -> the actions it allows.
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "pending": frozenset({"pause", "advance", "promote", "rollback", "abort"}),
    "progressing": frozenset({"pause", "advance", "promote", "rollback", "abort"}),
    "paused": frozenset({"resume", "rollback", "abort"}),
    **{state: frozenset() for state in TERMINAL_STATES},
}
_ENDS = {"promote": "promoted", "rollback": "rolled_back", "abort": "aborted"}

#: The candidate's bandit weight before the controller's first update: no
#: evidence yet, so each arm is as likely to be the better one.
BANDIT_START_WEIGHT = 0.5
#: The evidence key of a bandit ADVANCE: the candidate's new weight.
BANDIT_WEIGHT_KEY = "weight"


@dataclass(frozen=True)
class Rollout:
    """Where a rollout stands: everything its next move depends on.

    ``step`` counts the advances: canary: the index into ``step_percents``;
    blue-green and rolling: 0 before the switch, 1 after (rolling: after the
    advance that switched its last live gateway replica); shadow: 0 while
    mirrored, k >= 1 a canary at ``step_percents[k - 1]``; bandit: the number
    of weight updates. ``switched_replicas``: rolling, the gateway replicas
    switched to the candidate so far, in switch order (:mod:`.replicas`).
    """

    model: str
    strategy: str
    baseline_version: int
    candidate_version: int
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    state: str = "pending"
    step: int = 0
    switched_replicas: tuple[str, ...] = ()


@dataclass(frozen=True)
class Move:
    """The result of an action: the rollout after it, and the routes (None: unchanged)."""

    rollout: Rollout
    routes: tuple[Route, ...] | None


def start(
    model: str, strategy: str, baseline_version: int, candidate_version: int, policy: RolloutPolicy
) -> Move:
    """A new rollout of ``candidate_version`` over the primary ``baseline_version``, and its routes.

    >>> move = start("churn", "blue-green", 1, 2, RolloutPolicy())
    >>> move.rollout.state, move.routes[1]
    ('pending', Route(version=2, weight=0.0, role='challenger'))
    >>> start("churn", "direct", 1, 2, RolloutPolicy())
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: strategy 'direct' needs no rollout: set the deployment \
instead (headwater deploy churn 2)
    >>> start("churn", "canary", 2, 2, RolloutPolicy())
    Traceback (most recent call last):
    ...
    headwater.shared.errors.FailedPrecondition: version 2 is already the primary of 'churn': \
nothing to roll out
    """
    validate_start(model, strategy, candidate_version, policy)
    if candidate_version == baseline_version:
        raise FailedPrecondition(
            f"version {candidate_version} is already the primary of {model!r}: nothing to roll out"
        )
    state = "pending" if strategy in SWITCHING_STRATEGIES else "progressing"
    rollout = Rollout(model, strategy, baseline_version, candidate_version, policy, state)
    return Move(rollout, routes_at(rollout))


def validate_start(
    model: str, strategy: str, candidate_version: int, policy: RolloutPolicy
) -> None:
    """Check what a rollout start asks for that needs no database."""
    validate_model_name(model)
    validate_choice("strategy", strategy, STRATEGIES)
    if strategy == "direct":
        raise InvalidInput(
            f"strategy 'direct' needs no rollout: set the deployment instead "
            f"(headwater deploy {model} {candidate_version})"
        )
    if candidate_version <= 0:
        raise InvalidInput(f"candidate_version must be >= 1, got {candidate_version}")
    validate_policy(policy)


def apply(rollout: Rollout, action: str, evidence: Mapping[str, float] | None = None) -> Move:
    """The move ``action`` makes from where ``rollout`` stands.

    >>> paused = apply(start("m", "canary", 1, 2, RolloutPolicy()).rollout, "pause").rollout
    >>> paused.state
    'paused'
    >>> apply(paused, "advance")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.FailedPrecondition: rollout of 'm' is paused: resume it or roll it back
    >>> apply(paused, "rollback").routes
    (Route(version=1, weight=1.0, role='primary'),)

    Raises:
        InvalidInput: an unknown action, or a bandit advance without a valid weight.
        FailedPrecondition: the rollout's state (or step) does not allow the action;
            the message names what would.

    """
    validate_choice("action", action, ACTIONS)
    if action not in TRANSITIONS[rollout.state]:
        raise refusal(rollout, action)
    if action == "pause":
        return Move(dataclasses.replace(rollout, state="paused"), None)
    if action == "resume":
        return Move(dataclasses.replace(rollout, state=_unpaused_state(rollout)), None)
    if action == "advance":
        return _advance(rollout, evidence or {})
    ended = dataclasses.replace(rollout, state=_ENDS[action])
    return Move(ended, routes_at(ended))


def refusal(rollout: Rollout, action: str) -> FailedPrecondition:
    """The error for an action the rollout's state does not allow, naming what it allows.

    >>> str(refusal(Rollout("m", "canary", 1, 2, state="promoted"), "pause"))
    "rollout of 'm' is already promoted: start a new one (headwater deploy m VERSION --strategy \
STRATEGY)"
    >>> str(refusal(Rollout("m", "canary", 1, 2, state="progressing"), "resume"))
    "rollout of 'm' is progressing, not paused: nothing to resume"
    """
    subject = f"rollout of {rollout.model!r}"
    if rollout.state in TERMINAL_STATES:
        return FailedPrecondition(
            f"{subject} is already {said(rollout.state)}: start a new one "
            f"(headwater deploy {rollout.model} VERSION --strategy STRATEGY)"
        )
    if rollout.state == "paused":
        already = "already " if action == "pause" else ""
        return FailedPrecondition(f"{subject} is {already}paused: resume it or roll it back")
    return FailedPrecondition(f"{subject} is {rollout.state}, not paused: nothing to resume")


def _unpaused_state(rollout: Rollout) -> str:
    """Where a resume returns: pending for a switching strategy not switched yet (not a replica)."""
    if rollout.strategy in SWITCHING_STRATEGIES and not (rollout.step or rollout.switched_replicas):
        return "pending"
    return "progressing"


def last_step(rollout: Rollout) -> int | None:
    """The highest step the rollout can advance to (None: a bandit advances without end).

    >>> last_step(Rollout("m", "canary", 1, 2)), last_step(Rollout("m", "shadow", 1, 2))
    (3, 4)
    """
    if rollout.strategy == "bandit":
        return None
    if rollout.strategy in SWITCHING_STRATEGIES:
        return 1
    mirrored = 1 if rollout.strategy == "shadow" else 0
    return len(rollout.policy.step_percents) - 1 + mirrored


def _advance(rollout: Rollout, evidence: Mapping[str, float]) -> Move:
    final = last_step(rollout)
    if final is not None and rollout.step >= final:
        subject = f"rollout of {rollout.model!r}"
        if rollout.strategy in SWITCHING_STRATEGIES:
            raise FailedPrecondition(
                f"{subject} has switched to v{rollout.candidate_version} already: promote it "
                f"(drops v{rollout.baseline_version}) or roll it back"
            )
        raise FailedPrecondition(
            f"{subject} is at its last step ({rollout.policy.step_percents[-1]:g}%): "
            "promote it or roll it back"
        )
    weight = _bandit_weight(rollout, evidence) if rollout.strategy == "bandit" else None
    advanced = dataclasses.replace(rollout, state="progressing", step=rollout.step + 1)
    return Move(advanced, routes_at(advanced, weight))


def _bandit_weight(rollout: Rollout, evidence: Mapping[str, float]) -> float:
    floor = rollout.policy.bandit_floor_weight
    allowed = f"[{floor:g}, {1 - floor:g}]"
    if BANDIT_WEIGHT_KEY not in evidence:
        raise InvalidInput(
            f"a bandit advance needs evidence {BANDIT_WEIGHT_KEY!r}: the candidate's share "
            f"of traffic in {allowed}"
        )
    weight = evidence[BANDIT_WEIGHT_KEY]
    if not floor <= weight <= 1 - floor:
        raise InvalidInput(
            f"bandit weight {weight:g} is outside {allowed} (the floor weight is {floor:g})"
        )
    return weight


def routes_at(rollout: Rollout, bandit_weight: float | None = None) -> tuple[Route, ...]:
    """The routes a rollout puts in the deployment where it stands.

    ``bandit_weight`` is the candidate's share for a bandit (None: the start weight).

    >>> routes_at(Rollout("m", "shadow", 1, 2, RolloutPolicy(shadow_percent=20)))[1]
    Route(version=2, weight=0.2, role='shadow')
    >>> routes_at(Rollout("m", "shadow", 1, 2, step=1))[1]
    Route(version=2, weight=0.05, role='canary')
    >>> routes_at(Rollout("m", "blue-green", 1, 2, step=1))
    (Route(version=2, weight=1.0, role='primary'), Route(version=1, weight=0.0, role='challenger'))
    >>> routes_at(Rollout("m", "bandit", 1, 2, step=3), bandit_weight=0.8)[1]
    Route(version=2, weight=0.8, role='canary')
    >>> routes_at(Rollout("m", "canary", 1, 2, state="aborted", step=2))
    (Route(version=1, weight=1.0, role='primary'),)
    """
    baseline, candidate = rollout.baseline_version, rollout.candidate_version
    if rollout.state == "promoted":
        return (Route(candidate, 1.0, "primary"),)
    if rollout.state in TERMINAL_STATES:
        return (Route(baseline, 1.0, "primary"),)
    if rollout.strategy == "bandit":
        return _split(rollout, BANDIT_START_WEIGHT if bandit_weight is None else bandit_weight)
    if rollout.strategy in SWITCHING_STRATEGIES:
        if rollout.step == 0:
            return (Route(baseline, 1.0, "primary"), Route(candidate, 0.0, "challenger"))
        return (Route(candidate, 1.0, "primary"), Route(baseline, 0.0, "challenger"))
    canary_step = rollout.step
    if rollout.strategy == "shadow":
        if rollout.step == 0:
            mirrored = rollout.policy.shadow_percent / 100
            return (Route(baseline, 1.0, "primary"), Route(candidate, mirrored, "shadow"))
        canary_step -= 1
    return _split(rollout, rollout.policy.step_percents[canary_step] / 100)


def _split(rollout: Rollout, candidate_weight: float) -> tuple[Route, ...]:
    return (
        Route(rollout.baseline_version, 1.0 - candidate_weight, "primary"),
        Route(rollout.candidate_version, candidate_weight, "canary"),
    )


def said(state: str) -> str:
    """A state as a sentence says it.

    >>> said("rolled_back")
    'rolled back'
    """
    return state.replace("_", " ")


def describe(rollout: Rollout) -> str:
    """What a rollout does, in a few words.

    >>> describe(Rollout("m", "canary", 1, 2))
    'canary of v2 over v1'
    """
    return f"{rollout.strategy} of v{rollout.candidate_version} over v{rollout.baseline_version}"


def already_active_error(rollout: Rollout) -> FailedPrecondition:
    """The error for starting a rollout while one is active.

    >>> str(already_active_error(Rollout("m", "canary", 1, 2, state="progressing")))
    "a rollout of 'm' is already progressing (canary of v2 over v1): promote it, roll it back \
or abort it first"
    """
    return FailedPrecondition(
        f"a rollout of {rollout.model!r} is already {said(rollout.state)} ({describe(rollout)}): "
        "promote it, roll it back or abort it first"
    )


def deployment_locked_error(rollout: Rollout) -> FailedPrecondition:
    """The error for setting a deployment by hand while a rollout owns its routes.

    >>> str(deployment_locked_error(Rollout("m", "canary", 1, 2, state="paused")))
    "model 'm' has a rollout paused (canary of v2 over v1): abort the rollout first \
(headwater rollout abort m)"
    """
    return FailedPrecondition(
        f"model {rollout.model!r} has a rollout {said(rollout.state)} ({describe(rollout)}): "
        f"abort the rollout first (headwater rollout abort {rollout.model})"
    )


def check_revision(rollout: Rollout, revision: int, expected: int) -> None:
    """Raise unless ``expected`` (0: any) is the rollout's current ``revision``.

    >>> check_revision(Rollout("m", "canary", 1, 2, state="progressing", step=2), 5, 0)
    >>> check_revision(Rollout("m", "canary", 1, 2, state="progressing", step=2), 5, 4)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.FailedPrecondition: rollout of 'm' is at revision 5 (progressing, \
step 2), not 4: read it again (headwater rollout status m)
    """
    if expected and expected != revision:
        raise FailedPrecondition(
            f"rollout of {rollout.model!r} is at revision {revision} ({said(rollout.state)}, "
            f"step {rollout.step}), not {expected}: read it again "
            f"(headwater rollout status {rollout.model})"
        )


def no_rollout_error(model: str) -> NotFound:
    """The error for a model that never had a rollout.

    >>> str(no_rollout_error("m"))
    "model 'm' has no rollout: start one (headwater deploy m VERSION --strategy canary)"
    """
    return NotFound(
        f"model {model!r} has no rollout: start one "
        f"(headwater deploy {model} VERSION --strategy canary)"
    )


def no_deployment_error(model: str) -> FailedPrecondition:
    """The error for starting a rollout of a model that has no deployment to roll out from.

    >>> str(no_deployment_error("m"))
    "model 'm' has no deployment to roll out from: deploy a first version directly \
(headwater deploy m VERSION)"
    """
    return FailedPrecondition(
        f"model {model!r} has no deployment to roll out from: deploy a first version directly "
        f"(headwater deploy {model} VERSION)"
    )


def other_rollout_error(model: str, expected_id: str, active: Rollout | None) -> FailedPrecondition:
    """The error for a transition naming a rollout that is not the model's active one.

    >>> str(other_rollout_error("m", "r1", None))
    "rollout r1 of 'm' is not active and the model has no active rollout"
    """
    if active is None:
        return FailedPrecondition(
            f"rollout {expected_id} of {model!r} is not active and the model has no active rollout"
        )
    return FailedPrecondition(
        f"rollout {expected_id} of {model!r} is not the active one: a {describe(active)} is "
        f"{said(active.state)}: read it again (headwater rollout status {model})"
    )
