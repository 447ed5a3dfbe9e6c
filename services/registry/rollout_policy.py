"""A rollout's policy and the requests that start and move rollouts: their rules (pure).

The policy says how a rollout moves (its canary steps) and how its controller
judges it (interval, sample size, margin, test level, latency budget, bandit
floor); :mod:`.rollouts` moves it. Every check raises InvalidInput naming the
field and the rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from headwater.services.registry.domain import validate_text
from headwater.shared.errors import InvalidInput

DEFAULT_STEP_PERCENTS = (5.0, 25.0, 50.0, 100.0)
MAX_STEPS = 20
MAX_INTERVAL_S = 86_400.0
MAX_EVIDENCE_ENTRIES = 64
MAX_REASON_CHARS = 1024
_EVIDENCE_NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,64}")


@dataclass(frozen=True)
class RolloutPolicy:
    """How a rollout moves (steps) and how its controller judges it (the rest).

    Attributes:
        step_percents: Canary weights in percent, strictly increasing, ending at 100.
        interval_s: Least time per step before the controller advances.
        min_samples: Least joined labels per arm per step before it advances.
        max_drop: Non-inferiority margin on joined-label quality.
        alpha: Level of the sequential test (the false-rollback rate).
        shadow_percent: Share of requests mirrored to a shadow, in percent.
        bandit_floor_weight: Least weight of each bandit arm.
        max_latency_ratio: Candidate p99 latency over the baseline's above which it loses.

    """

    step_percents: tuple[float, ...] = DEFAULT_STEP_PERCENTS
    interval_s: float = 60.0
    min_samples: int = 200
    max_drop: float = 0.01
    alpha: float = 0.05
    shadow_percent: float = 100.0
    bandit_floor_weight: float = 0.05
    max_latency_ratio: float = 1.5


#: (field, rule it must hold, the rule in words) for every policy field but the steps.
_POLICY_RULES: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("interval_s", lambda v: 0 < v <= MAX_INTERVAL_S, f"in (0, {MAX_INTERVAL_S:g}]"),
    ("min_samples", lambda v: v >= 1, ">= 1"),
    ("max_drop", lambda v: 0 <= v < math.inf, "finite and >= 0"),
    ("alpha", lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
    ("shadow_percent", lambda v: 0 < v <= 100, "in (0, 100]"),
    ("bandit_floor_weight", lambda v: 0 <= v <= 0.5, "in [0, 0.5]"),
    ("max_latency_ratio", lambda v: 1 <= v < math.inf, "finite and >= 1"),
)


def validate_policy(policy: RolloutPolicy) -> RolloutPolicy:
    """Check a rollout policy; return it.

    >>> validate_policy(RolloutPolicy(step_percents=(10.0, 100.0))).step_percents
    (10.0, 100.0)
    >>> validate_policy(RolloutPolicy(step_percents=(50.0, 25.0, 100.0)))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: rollout steps must increase strictly, got 25% after 50%
    >>> validate_policy(RolloutPolicy(step_percents=(5.0, 50.0)))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: the last rollout step must be 100%, got 50%
    >>> validate_policy(RolloutPolicy(alpha=0.7))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: alpha must be in (0, 0.5], got 0.7
    """
    _validate_steps(policy.step_percents)
    for name, holds, rule in _POLICY_RULES:
        value = getattr(policy, name)
        if not holds(value):  # NaN fails every comparison, so it lands here too
            raise InvalidInput(f"{name} must be {rule}, got {value:g}")
    return policy


def _validate_steps(percents: tuple[float, ...]) -> None:
    if not percents:
        raise InvalidInput("a rollout needs at least one step")
    if len(percents) > MAX_STEPS:
        raise InvalidInput(f"a rollout has at most {MAX_STEPS} steps, got {len(percents)}")
    previous = 0.0
    for percent in percents:
        if not 0 < percent <= 100:
            raise InvalidInput(f"rollout step {percent:g}% is not in (0, 100]")
        if percent <= previous:
            raise InvalidInput(
                f"rollout steps must increase strictly, got {percent:g}% after {previous:g}%"
            )
        previous = percent
    if percents[-1] != 100:
        raise InvalidInput(f"the last rollout step must be 100%, got {percents[-1]:g}%")


def validate_evidence(evidence: Mapping[str, float]) -> dict[str, float]:
    """Check a transition's evidence (metric name -> finite value); return it as a dict.

    >>> validate_evidence({"candidate.n": 230, "log_e": 1.5})
    {'candidate.n': 230, 'log_e': 1.5}
    >>> validate_evidence({"p": math.inf})
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: evidence 'p' must be finite, got inf
    """
    if len(evidence) > MAX_EVIDENCE_ENTRIES:
        raise InvalidInput(f"at most {MAX_EVIDENCE_ENTRIES} evidence entries, got {len(evidence)}")
    for name, value in evidence.items():
        if not _EVIDENCE_NAME.fullmatch(name):
            raise InvalidInput(
                f"invalid evidence name {name!r}: 1-64 characters, no whitespace or control ones"
            )
        if not math.isfinite(value):
            raise InvalidInput(f"evidence {name!r} must be finite, got {value}")
    return dict(evidence)


def validate_reason(reason: str) -> str:
    """Check the reason given for a transition (free text, at most 1024 characters)."""
    return validate_text("reason", reason, MAX_REASON_CHARS)


@dataclass(frozen=True)
class NewRollout:
    """A rollout as a caller asks to start it (the baseline is the deployed primary)."""

    model: str
    candidate_version: int
    strategy: str
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    reason: str = ""


@dataclass(frozen=True)
class RolloutChange:
    """A transition as a caller asks for it.

    Attributes:
        model: Whose active rollout moves.
        action: pause, resume, advance, promote, rollback or abort.
        reason: Why, in words.
        evidence: What the decision rests on (metric name -> value).
        expected_revision: The rollout's revision the caller saw; 0 accepts any.
        rollout_id: The rollout the caller means; empty accepts the active one.

    """

    model: str
    action: str
    reason: str = ""
    evidence: Mapping[str, float] = field(default_factory=dict)
    expected_revision: int = 0
    rollout_id: str = ""
