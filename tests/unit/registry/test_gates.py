"""Promotion gates: each gate's judgement and words, schema compatibility, the rules of gates
and evaluations, and their conversions."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from headwater.services.registry import gate_convert
from headwater.services.registry.evaluations import NewEvaluation, validate_new_evaluation
from headwater.services.registry.gate_schema import features_named, schema_problems
from headwater.services.registry.gates import (
    GATE_NAMES,
    Candidate,
    Evaluation,
    GateRefusal,
    GateResult,
    PromotionGates,
    ScoreGate,
    evaluate,
    latest,
    refusal,
    validate_gates,
)
from headwater.shared.errors import FailedPrecondition, InvalidInput
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_gates_client import promotion_gates
from headwater.shared.specs import parse_spec

NOW = dt.datetime(2025, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
LOGREG = '{"component": "linear_model.LogisticRegression"}'
LINREG = '{"component": "linear_model.LinearRegression"}'
NO_SCHEMA = {"require_schema_compatible": False}


def select(*keys: str, last: str = LOGREG) -> str:
    quoted = ", ".join(f'"{key}"' for key in keys)
    first = f'{{"component": "compose.Select", "params": {{"keys": [{quoted}]}}}}'
    return f'{{"pipeline": [{first}, {last}]}}'


def candidate(spec: str = LOGREG, baseline: str = LOGREG, task: str = "binary") -> Candidate:
    return Candidate("churn", task, ("age", "plan"), 2, spec, 1, baseline)


def seen(
    metric: str, value: float, examples: int = 100, source: str = "trainer", s: int = 0
) -> Evaluation:
    return Evaluation(source, metric, value, examples, NOW + dt.timedelta(seconds=s))


def judge(
    gates: PromotionGates, *evaluations: Evaluation, subject: Candidate | None = None
) -> dict[str, GateResult]:
    report = evaluate(gates, subject or candidate(), evaluations)
    return {result.gate: result for result in report.results}


# --- what each gate says ------------------------------------------------------------------


def test_the_defaults_enforce_schema_compatibility_alone() -> None:
    report = evaluate(PromotionGates(), candidate(), [])
    assert [r.gate for r in report.results] == ["schema_compatible"]
    assert report.passed and report.failures == ()
    assert evaluate(PromotionGates(**NO_SCHEMA), candidate(), []).results == ()


def test_every_enforced_gate_is_judged_in_order() -> None:
    gates = PromotionGates(ScoreGate("accuracy", 0.8), 10, True, 5.0)
    results = evaluate(gates, candidate(), [seen("accuracy", 0.9), seen("warmup_latency_ms", 1)])
    assert tuple(r.gate for r in results.results) == GATE_NAMES
    assert results.passed


def test_a_low_accuracy_fails_short_by_the_margin() -> None:
    result = judge(PromotionGates(ScoreGate("accuracy", 0.85), **NO_SCHEMA),
                   seen("accuracy", 0.81, 1200))["min_score"]
    assert not result.passed
    assert (result.observed, result.required) == (0.81, 0.85)
    assert result.margin == pytest.approx(-0.04)
    assert result.message == (
        "gate min_score failed: accuracy 0.81 < 0.85 required (short by 0.04) over 1200 examples")


def test_a_high_enough_accuracy_passes_with_what_it_has_to_spare() -> None:
    result = judge(PromotionGates(ScoreGate("rolling_accuracy", 0.85), **NO_SCHEMA),
                   seen("rolling_accuracy", 0.9, 40))["min_score"]
    assert result.passed and result.margin == pytest.approx(0.05)
    assert result.detail == "rolling_accuracy 0.9 >= 0.85 required (0.05 to spare) over 40 examples"


def test_an_exactly_met_threshold_passes() -> None:
    results = judge(PromotionGates(ScoreGate("accuracy", 0.5)), seen("accuracy", 0.5))
    assert results["min_score"].passed and results["min_score"].margin == 0


def test_an_error_metric_must_stay_at_or_below_its_threshold() -> None:
    gates = PromotionGates(ScoreGate("mae", 0.3), **NO_SCHEMA)
    worse = judge(gates, seen("mae", 0.42, 800))["min_score"]
    assert not worse.passed and worse.margin == pytest.approx(-0.12)
    assert worse.detail == "mae 0.42 > 0.3 allowed (over by 0.12) over 800 examples"
    better = judge(gates, seen("mae", 0.25))["min_score"]
    assert better.passed and better.detail.startswith("mae 0.25 <= 0.3 allowed (0.05 to spare)")


def test_missing_evidence_fails_the_gates_that_need_it() -> None:
    results = judge(PromotionGates(ScoreGate("accuracy", 0.85), 500, False, 5.0),
                    seen("mae", 0.1), seen("rolling_accuracy", 0.99))
    assert all(not r.passed and r.observed is None and r.margin is None for r in results.values())
    assert results["min_score"].detail == "no accuracy of version 2 recorded yet (0.85 required)"
    assert results["min_examples"].detail == (
        "no accuracy of version 2 recorded yet (500 examples required)")
    assert results["max_warmup_latency_ms"].detail == (
        "no warm-up latency of version 2 reported yet (5 ms allowed)")


def test_the_newest_evaluation_of_the_metric_counts_whoever_reported_it() -> None:
    older = seen("accuracy", 0.95, 5000, source="trainer-a", s=0)
    newer = seen("accuracy", 0.80, 6000, source="trainer-b", s=10)
    result = judge(PromotionGates(ScoreGate("accuracy", 0.85)), older, newer)["min_score"]
    assert result.observed == 0.80 and not result.passed
    tie = seen("accuracy", 0.9, 7000, source="trainer-c", s=10)
    assert latest([older, newer, tie], "accuracy") == tie  # same time: more examples


def test_min_examples_reads_the_score_gates_metric_else_the_tasks() -> None:
    scored = PromotionGates(ScoreGate("rolling_accuracy", 0.5), min_examples=500)
    short = judge(scored, seen("rolling_accuracy", 0.9, 300), seen("accuracy", 0.9, 9000))
    assert short["min_examples"].detail == (
        "300 examples behind rolling_accuracy < 500 required (short by 200)")
    assert short["min_examples"].margin == -200
    regression = candidate(LINREG, LINREG, task="regression")
    alone = judge(PromotionGates(min_examples=500), seen("mae", 1.0, 800), subject=regression)
    assert alone["min_examples"].passed
    assert alone["min_examples"].detail == "800 examples behind mae >= 500 required (300 to spare)"


def test_the_latency_gate_judges_the_worst_gateway() -> None:
    gates = PromotionGates(max_warmup_latency_ms=5, require_schema_compatible=False)
    one = judge(gates, seen("warmup_latency_ms", 3.25, 50, source="gateway:gw-1"))
    assert one["max_warmup_latency_ms"].detail == (
        "warmup_latency_ms 3.25 <= 5 allowed (1.75 to spare) on gateway:gw-1")
    two = judge(gates, seen("warmup_latency_ms", 3.25, source="gateway:gw-1"),
                seen("warmup_latency_ms", 7.5, source="gateway:gw-2"))["max_warmup_latency_ms"]
    assert not two.passed and two.observed == 7.5 and two.margin == -2.5
    assert two.detail == (
        "warmup_latency_ms 7.5 > 5 allowed (over by 2.5) on gateway:gw-2, the worst of 2")


def test_a_refusal_names_every_failed_gate_and_keeps_the_context() -> None:
    gates = PromotionGates(ScoreGate("accuracy", 0.85), 500)
    subject = candidate(select("age", "zip"))
    report = evaluate(gates, subject, [seen("accuracy", 0.81, 300)])
    error = refusal(subject, report, "start a canary rollout", {"action": "start"})
    assert isinstance(error, FailedPrecondition) and isinstance(error, GateRefusal)
    assert str(error) == (
        "version 2 of 'churn' cannot start a canary rollout: gate schema_compatible failed: "
        "version 2 names a feature the model's schema does not declare: 'zip'; gate min_score "
        "failed: accuracy 0.81 < 0.85 required (short by 0.04) over 300 examples; gate "
        "min_examples failed: 300 examples behind accuracy < 500 required (short by 200) "
        "(headwater gates show churn)")
    assert error.candidate == subject and error.report == report
    assert error.context == {"action": "start"}
    assert [r.gate for r in report.failures] == ["schema_compatible", "min_score", "min_examples"]


# --- schema compatibility ---------------------------------------------------------------


def test_a_spec_that_names_only_declared_features_is_compatible() -> None:
    result = judge(PromotionGates(), subject=candidate(select("age", "plan")))["schema_compatible"]
    assert result.passed and (result.observed, result.required, result.margin) == (0, 0, 0)
    assert result.detail == (
        "version 2 names only declared features and predicts a classifier's output like version 1")


def test_every_param_that_names_features_is_read_nested_too() -> None:
    spec = parse_spec('''{"pipeline": [
        {"component": "compose.TransformerUnion", "params": {"transformers": [
            {"component": "compose.Discard", "params": {"keys": ["tmp"]}},
            {"component": "preprocessing.StatImputer", "params": {"imputers": [["plan", "free"]]}}
        ]}},
        {"component": "ensemble.BaggingClassifier", "params": {"model":
            {"component": "tree.HoeffdingTreeClassifier",
             "params": {"nominal_attributes": ["region", "plan"]}}}}]}''')
    assert features_named(spec) == ("tmp", "plan", "region")
    assert schema_problems(("plan",), spec, spec, 1) == (
        "names 2 features the model's schema does not declare: 'tmp', 'region'",)


def test_a_spec_without_feature_names_consumes_the_schema_as_given() -> None:
    assert features_named(parse_spec(LOGREG)) == ()


def test_a_candidate_that_predicts_another_kind_is_incompatible() -> None:
    regressor = select("zip", last=LINREG)
    result = judge(PromotionGates(), subject=candidate(regressor))["schema_compatible"]
    assert not result.passed and result.observed == 2 and result.margin == -2
    assert result.detail == (
        "version 2 names a feature the model's schema does not declare: 'zip'; "
        "predicts a regressor's output where version 1 predicts a classifier's")


def test_a_stored_spec_that_no_longer_parses_fails_the_schema_gate() -> None:
    result = judge(PromotionGates(), subject=candidate('{"component": "gone.Model"}'))
    assert not result["schema_compatible"].passed
    assert result["schema_compatible"].detail.startswith(
        "a spec no longer parses: unknown component 'gone.Model'")


def test_the_schema_gate_can_be_switched_off() -> None:
    assert evaluate(PromotionGates(**NO_SCHEMA), candidate(select("zip")), []).passed


# --- the rules of gates and evaluations -----------------------------------------------------


@pytest.mark.parametrize(
    ("task", "gates", "message"),
    [
        ("binary", PromotionGates(ScoreGate("mae", 0.1)), "reads accuracy or rolling_accuracy"),
        ("regression", PromotionGates(ScoreGate("accuracy", 0.9)), "reads mae or rolling_mae"),
        ("multiclass", PromotionGates(ScoreGate("accuracy", -0.1)), "must be in [0, 1], got -0.1"),
        ("binary", PromotionGates(ScoreGate("accuracy", math.nan)), "must be in [0, 1], got nan"),
        ("regression", PromotionGates(ScoreGate("mae", -1)), "finite and >= 0, got -1"),
        ("regression", PromotionGates(ScoreGate("mae", math.inf)), "finite and >= 0, got inf"),
        ("binary", PromotionGates(min_examples=-1), "min_examples must be in [0, "),
        ("binary", PromotionGates(max_warmup_latency_ms=0), "max_warmup_latency_ms must be in (0"),
        ("binary", PromotionGates(max_warmup_latency_ms=math.nan), "got nan"),
    ],
)
def test_gates_that_break_a_rule_are_refused(
    task: str, gates: PromotionGates, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate_gates(gates, task)


def test_gates_within_the_rules_come_back_unchanged() -> None:
    gates = PromotionGates(ScoreGate("rolling_mae", 0.0), 10**12, False, 3_600_000.0)
    assert validate_gates(gates, "regression") is gates


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "Bad Name"}, "model name"),
        ({"version": 0}, "needs a version >= 1, got 0"),
        ({"source": ""}, "invalid evaluation source ''"),
        ({"source": "x" * 129}, "invalid evaluation source"),
        ({"metric": "Accuracy"}, "invalid metric name 'Accuracy'"),
        ({"value": math.inf}, "evaluation accuracy must be finite, got inf"),
        ({"examples": -1}, "examples must be >= 0, got -1"),
        ({"at": NOW + dt.timedelta(minutes=6)}, "ahead of the registry's clock"),
    ],
)
def test_evaluations_that_break_a_rule_are_refused(change: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"model": "churn", "version": 2, "source": "gateway:gw-1",
                                 "metric": "accuracy", "value": 0.9, "examples": 10, **change}
    with pytest.raises(InvalidInput, match=message):
        validate_new_evaluation(NewEvaluation(**fields), NOW)  # type: ignore[arg-type]


def test_an_evaluation_keeps_its_time_within_the_clock_skew() -> None:
    soon = NOW + dt.timedelta(minutes=4)
    evaluation = NewEvaluation("churn", 2, "trainer", "mae", 0.3, 5, soon)
    assert validate_new_evaluation(evaluation, NOW).at == soon
    assert validate_new_evaluation(NewEvaluation("churn", 2, "t", "mae", 0.3), NOW).at == NOW


# --- conversions ---------------------------------------------------------------------------


def test_gates_from_a_message_leave_unset_gates_off_but_the_schema_gate_on() -> None:
    assert gate_convert.gates_of_message(registry_pb2.PromotionGates()) == PromotionGates()
    message = promotion_gates(min_score=("accuracy", 0.0), require_schema_compatible=False)
    assert gate_convert.gates_of_message(message) == PromotionGates(
        ScoreGate("accuracy", 0.0), require_schema_compatible=False)


def test_a_gates_row_becomes_a_message_with_every_field() -> None:
    row = {"score_metric": "mae", "min_score": 0.3, "min_examples": 50,
           "require_schema_compatible": False, "max_warmup_latency_ms": 4.5, "revision": 3,
           "updated_at": NOW, "updated_by": "ops"}
    message = gate_convert.gates_message("churn", row)
    assert (message.model, message.min_score.metric, message.min_score.threshold) == (
        "churn", "mae", 0.3)
    assert (message.min_examples, message.require_schema_compatible) == (50, False)
    assert (message.max_warmup_latency_ms, message.revision, message.updated_by) == (4.5, 3, "ops")
    assert message.updated_at.ToDatetime(tzinfo=dt.UTC) == NOW
    assert gate_convert.gates_of_message(message) == gate_convert.gates_of_row(row)


def test_a_model_without_gates_shows_the_defaults_at_revision_zero() -> None:
    message = gate_convert.gates_message("churn", None)
    assert message.revision == 0 and message.require_schema_compatible
    assert message.HasField("require_schema_compatible")
    assert not message.HasField("min_score") and not message.HasField("max_warmup_latency_ms")


def test_an_evaluation_request_keeps_its_time_in_utc() -> None:
    request = registry_pb2.RecordEvaluationRequest(
        model="churn", version=2, source="trainer", metric="accuracy", value=0.9, examples=7)
    assert gate_convert.new_evaluation(request).at is None
    request.at.FromDatetime(NOW)
    assert gate_convert.new_evaluation(request) == NewEvaluation(
        "churn", 2, "trainer", "accuracy", 0.9, 7, NOW)


def test_a_report_becomes_json_data_for_the_audit() -> None:
    report = evaluate(PromotionGates(ScoreGate("accuracy", 0.85), **NO_SCHEMA), candidate(),
                      [seen("accuracy", 0.8, 10)])
    (result,) = gate_convert.report_json(report)
    assert result["gate"] == "min_score" and result["passed"] is False
    assert result["observed"] == 0.8 and result["required"] == 0.85
    assert result["margin"] == pytest.approx(-0.05)
