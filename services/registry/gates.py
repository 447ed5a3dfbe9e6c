"""Promotion gates: what a version must show before a rollout of it may start or finish (pure).

A model's gates, checked when a rollout of a candidate starts (StartRollout)
and when it is promoted (TransitionRollout PROMOTE):

==========================  ================================================  ==============
gate                        the candidate passes when                         default
==========================  ================================================  ==============
``schema_compatible``       it consumes only declared features and predicts   enforced
                            what the deployed version predicts
                            (:mod:`.gate_schema`)
``min_score``               its latest progressive-validation score is at     not enforced
                            least the threshold (accuracy, rolling_accuracy)
                            or at most it (mae, rolling_mae)
``min_examples``            that score rests on at least this many examples   not enforced
``max_warmup_latency_ms``   the worst warm-up latency a gateway replica       not enforced
                            reported is at most this many milliseconds
==========================  ================================================  ==============

Evidence comes as evaluations (:class:`Evaluation`), the latest per (metric, source): the
score is the newest evaluation of the metric from any source; the latency the
worst over the sources (every replica that warmed the version up). Missing
evidence fails the gate that needs it. Each result says by how much it passed
or failed:

>>> spec = '{"component": "linear_model.LogisticRegression"}'
>>> candidate = Candidate("churn", "binary", ("x",), 2, spec, 1, spec)
>>> noon = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
>>> gates = PromotionGates(min_score=ScoreGate("accuracy", 0.85), min_examples=500)
>>> seen = [Evaluation("trainer", "accuracy", 0.81, 1200, noon)]
>>> report = evaluate(gates, candidate, seen)
>>> [(r.gate, r.passed) for r in report.results]
[('schema_compatible', True), ('min_score', False), ('min_examples', True)]
>>> print(report.failures[0].message)
gate min_score failed: accuracy 0.81 < 0.85 required (short by 0.04) over 1200 examples
>>> report.results[2].margin, report.results[2].detail  # examples to spare
(700.0, '1200 examples behind accuracy >= 500 required (700 to spare)')
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headwater.services.registry.gate_schema import schema_problems
from headwater.shared.errors import FailedPrecondition, InvalidInput
from headwater.shared.specs import parse_spec

#: The progressive-validation metrics a min_score gate may use, by task.
SCORE_METRICS = {
    "binary": ("accuracy", "rolling_accuracy"),
    "multiclass": ("accuracy", "rolling_accuracy"),
    "regression": ("mae", "rolling_mae"),
}
LATENCY_METRIC = "warmup_latency_ms"
GATE_NAMES = ("schema_compatible", "min_score", "min_examples", "max_warmup_latency_ms")
MAX_MIN_EXAMPLES = 10**12
MAX_WARMUP_LATENCY_MS = 3_600_000.0


@dataclass(frozen=True)
class ScoreGate:
    """A least score: ``metric`` at least ``threshold`` (accuracy) or at most it (mae)."""

    metric: str
    threshold: float

    @property
    def higher_is_better(self) -> bool:
        """Whether the metric is a share of right answers rather than an error."""
        return self.metric.endswith("accuracy")


@dataclass(frozen=True)
class PromotionGates:
    """A model's gates; the defaults enforce schema compatibility alone.

    Attributes:
        min_score: The least score (None: no score gate).
        min_examples: Least examples behind the score (0: no gate).
        require_schema_compatible: Whether the schema gate is enforced.
        max_warmup_latency_ms: Most warm-up latency on any gateway (None: no gate).

    """

    min_score: ScoreGate | None = None
    min_examples: int = 0
    require_schema_compatible: bool = True
    max_warmup_latency_ms: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """One source's latest measurement of a version (``examples``: what it rests on)."""

    source: str
    metric: str
    value: float
    examples: int
    at: dt.datetime


@dataclass(frozen=True)
class Candidate:
    """The version a check judges and the deployed version (the baseline) it would replace."""

    model: str
    task: str
    features: tuple[str, ...]
    version: int
    spec_json: str
    baseline_version: int
    baseline_spec_json: str


@dataclass(frozen=True)
class GateResult:
    """How one gate judged a version.

    Attributes:
        gate: One of :data:`GATE_NAMES`.
        passed: Whether the version passed it.
        observed: What the evidence shows (None: no evidence).
        required: The gate's bound.
        margin: How far on the right side of the bound (negative: short or over
            by that much; None: no evidence).
        detail: The result in words.

    """

    gate: str
    passed: bool
    observed: float | None
    required: float
    margin: float | None
    detail: str

    @property
    def message(self) -> str:
        """``gate NAME passed|failed: detail``."""
        return f"gate {self.gate} {'passed' if self.passed else 'failed'}: {self.detail}"


@dataclass(frozen=True)
class GateReport:
    """The result of every enforced gate, in :data:`GATE_NAMES` order."""

    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        """Whether every enforced gate passed (true when none is enforced)."""
        return all(result.passed for result in self.results)

    @property
    def failures(self) -> tuple[GateResult, ...]:
        """The gates the version failed."""
        return tuple(result for result in self.results if not result.passed)


def score_metric(gates: PromotionGates, task: str) -> str:
    """The metric the score gates read: min_score's, else the task's accuracy or mae.

    >>> score_metric(PromotionGates(), "regression")
    'mae'
    """
    return gates.min_score.metric if gates.min_score else SCORE_METRICS[task][0]


def validate_gates(gates: PromotionGates, task: str) -> PromotionGates:
    """Check a model's gates against its task; return them.

    >>> validate_gates(PromotionGates(min_score=ScoreGate("mae", 0.5)), "binary")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: min_score of a binary model reads accuracy or \
rolling_accuracy, got 'mae'
    >>> validate_gates(PromotionGates(min_score=ScoreGate("accuracy", 1.5)), "binary")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: min_score accuracy must be in [0, 1], got 1.5
    """
    score = gates.min_score
    if score is not None:
        allowed = SCORE_METRICS[task]
        if score.metric not in allowed:
            raise InvalidInput(
                f"min_score of a {task} model reads {' or '.join(allowed)}, got {score.metric!r}"
            )
        top = 1.0 if score.higher_is_better else math.inf
        if not 0 <= score.threshold <= top or math.isinf(score.threshold):
            bounds = "in [0, 1]" if score.higher_is_better else "finite and >= 0"
            raise InvalidInput(f"min_score {score.metric} must be {bounds}, got {score.threshold}")
    if not 0 <= gates.min_examples <= MAX_MIN_EXAMPLES:
        raise InvalidInput(
            f"min_examples must be in [0, {MAX_MIN_EXAMPLES}], got {gates.min_examples}"
        )
    latency = gates.max_warmup_latency_ms
    if latency is not None and not 0 < latency <= MAX_WARMUP_LATENCY_MS:
        raise InvalidInput(
            f"max_warmup_latency_ms must be in (0, {MAX_WARMUP_LATENCY_MS:g}], got {latency}"
        )
    return gates


def evaluate(
    gates: PromotionGates, candidate: Candidate, evaluations: Iterable[Evaluation]
) -> GateReport:
    """Judge ``candidate`` by every enforced gate, on its latest evaluations."""
    seen = tuple(evaluations)
    results = []
    if gates.require_schema_compatible:
        results.append(_schema_result(candidate))
    score = latest(seen, score_metric(gates, candidate.task))
    if gates.min_score is not None:
        results.append(_score_result(gates.min_score, score, candidate.version))
    if gates.min_examples:
        results.append(_examples_result(gates, candidate, score))
    if gates.max_warmup_latency_ms is not None:
        results.append(_latency_result(gates.max_warmup_latency_ms, seen, candidate.version))
    return GateReport(tuple(results))


def latest(evaluations: Sequence[Evaluation], metric: str) -> Evaluation | None:
    """The newest evaluation of ``metric`` (on a tie, the one over more examples).

    >>> noon = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
    >>> old, new = (Evaluation("trainer", "mae", v, 10, noon + dt.timedelta(seconds=s))
    ...             for v, s in ((0.5, 0), (0.4, 1)))
    >>> latest([new, old], "mae") == new, latest([old], "accuracy")
    (True, None)
    """
    matching = [e for e in evaluations if e.metric == metric]
    return max(matching, key=lambda e: (e.at, e.examples), default=None)


def _num(value: float) -> str:
    return f"{value:.6g}"


def _judged(
    gate: str, observed: float, required: float, higher_is_better: bool, shown: str, tail: str
) -> GateResult:
    """A gate's result in words: ``shown`` (the observed value) vs the bound, then ``tail``."""
    margin = observed - required if higher_is_better else required - observed
    passed = margin >= 0
    sign = (">=" if passed else "<") if higher_is_better else ("<=" if passed else ">")
    bound = "required" if higher_is_better else "allowed"
    if passed:
        how = f"{_num(margin)} to spare"
    else:
        how = f"{'short' if higher_is_better else 'over'} by {_num(-margin)}"
    detail = f"{shown} {sign} {_num(required)} {bound} ({how}){tail}"
    return GateResult(gate, passed, observed, required, margin, detail)


def _missing(gate: str, required: float, detail: str) -> GateResult:
    return GateResult(gate, False, None, required, None, detail)


def _score_result(gate: ScoreGate, score: Evaluation | None, version: int) -> GateResult:
    if score is None:
        return _missing(
            "min_score", gate.threshold, f"no {gate.metric} of version {version} recorded yet "
            f"({_num(gate.threshold)} {'required' if gate.higher_is_better else 'allowed'})",
        )  # fmt: skip
    shown, tail = f"{gate.metric} {_num(score.value)}", f" over {score.examples} examples"
    return _judged("min_score", score.value, gate.threshold, gate.higher_is_better, shown, tail)


def _examples_result(
    gates: PromotionGates, candidate: Candidate, score: Evaluation | None
) -> GateResult:
    metric = score_metric(gates, candidate.task)
    if score is None:
        return _missing(
            "min_examples", float(gates.min_examples), f"no {metric} of version "
            f"{candidate.version} recorded yet ({gates.min_examples} examples required)",
        )  # fmt: skip
    shown = f"{score.examples} examples behind {metric}"
    return _judged(
        "min_examples", float(score.examples), float(gates.min_examples), True, shown, ""
    )


def _latency_result(
    budget_ms: float, evaluations: Sequence[Evaluation], version: int
) -> GateResult:
    reports = [e for e in evaluations if e.metric == LATENCY_METRIC]
    if not reports:
        return _missing(
            "max_warmup_latency_ms", budget_ms,
            f"no warm-up latency of version {version} reported yet ({_num(budget_ms)} ms allowed)",
        )  # fmt: skip
    worst = max(reports, key=lambda e: (e.value, e.source))
    tail = f" on {worst.source}" + (f", the worst of {len(reports)}" if len(reports) > 1 else "")
    shown = f"{LATENCY_METRIC} {_num(worst.value)}"
    return _judged("max_warmup_latency_ms", worst.value, budget_ms, False, shown, tail)


def _schema_result(candidate: Candidate) -> GateResult:
    try:
        spec, baseline = parse_spec(candidate.spec_json), parse_spec(candidate.baseline_spec_json)
    except InvalidInput as error:  # stored specs parsed once; the allow-list may have shrunk
        detail = f"a spec no longer parses: {error}"
        return GateResult("schema_compatible", False, 1.0, 0.0, -1.0, detail)
    problems = schema_problems(candidate.features, spec, baseline, candidate.baseline_version)
    if problems:
        detail = f"version {candidate.version} " + "; ".join(problems)
    else:
        detail = (
            f"version {candidate.version} names only declared features and predicts "
            f"a {spec.kind}'s output like version {candidate.baseline_version}"
        )
    count = float(len(problems))
    return GateResult("schema_compatible", not problems, count, 0.0, -count, detail)


class GateRefusal(FailedPrecondition):
    """A rollout refused by its candidate's gates.

    Attributes:
        candidate: The version refused (None only for a refusal made by hand).
        report: Every enforced gate's result (which failed, by how much).
        context: What the refused request was (action, strategy, rollout), for the audit.

    """

    def __init__(
        self,
        message: str,
        candidate: Candidate | None = None,
        report: GateReport = GateReport(()),
        context: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.candidate = candidate
        self.report = report
        self.context = dict(context or {})


def refusal(
    candidate: Candidate, report: GateReport, attempt: str, context: Mapping[str, Any]
) -> GateRefusal:
    """The error of a failed check; ``attempt`` says what was refused, after 'cannot'.

    >>> noon = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
    >>> seen = [Evaluation("gateway:gw-1", LATENCY_METRIC, 7.5, 50, noon),
    ...         Evaluation("gateway:gw-2", LATENCY_METRIC, 3.0, 50, noon)]
    >>> gates = PromotionGates(max_warmup_latency_ms=5, require_schema_compatible=False)
    >>> candidate = Candidate("churn", "binary", ("x",), 2, "{}", 1, "{}")  # specs unread
    >>> print(refusal(candidate, evaluate(gates, candidate, seen), "be promoted", {}))
    version 2 of 'churn' cannot be promoted: gate max_warmup_latency_ms failed: \
warmup_latency_ms 7.5 > 5 allowed (over by 2.5) on gateway:gw-1, the worst of 2 \
(headwater gates show churn)
    """
    failed = "; ".join(result.message for result in report.failures)
    message = (
        f"version {candidate.version} of {candidate.model!r} cannot {attempt}: {failed} "
        f"(headwater gates show {candidate.model})"
    )
    return GateRefusal(message, candidate, report, context)
