"""Translation of promotion gates and evaluations between messages, domain values and rows.

Like :mod:`.convert`, nothing here validates: :mod:`.gates` and
:mod:`.evaluations` own the rules.

>>> message = registry_pb2.PromotionGates(min_examples=500, max_warmup_latency_ms=5)
>>> gates_of_message(message)
PromotionGates(min_score=None, min_examples=500, require_schema_compatible=True, \
max_warmup_latency_ms=5.0)
>>> gates_json(gates_of_message(message))["require_schema_compatible"]  # unset means true
True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from headwater.services.registry.convert import timestamp
from headwater.services.registry.evaluations import NewEvaluation
from headwater.services.registry.gates import Evaluation, GateReport, PromotionGates, ScoreGate
from headwater.shared.pb import registry_pb2


def gates_of_message(message: registry_pb2.PromotionGates) -> PromotionGates:
    """The gates a message asks for: each one left unset is not enforced (schema: enforced)."""
    score = message.min_score if message.HasField("min_score") else None
    schema = message.HasField("require_schema_compatible")
    return PromotionGates(
        min_score=ScoreGate(score.metric, score.threshold) if score else None,
        min_examples=message.min_examples,
        require_schema_compatible=message.require_schema_compatible if schema else True,
        max_warmup_latency_ms=(
            message.max_warmup_latency_ms if message.HasField("max_warmup_latency_ms") else None
        ),
    )


def gates_of_row(row: Mapping[str, Any] | None) -> PromotionGates:
    """The gates of a promotion_gates row (None: never set, the defaults)."""
    if row is None:
        return PromotionGates()
    metric = row["score_metric"]
    return PromotionGates(
        min_score=ScoreGate(metric, row["min_score"]) if metric is not None else None,
        min_examples=row["min_examples"],
        require_schema_compatible=row["require_schema_compatible"],
        max_warmup_latency_ms=row["max_warmup_latency_ms"],
    )


def gates_message(model: str, row: Mapping[str, Any] | None) -> registry_pb2.PromotionGates:
    """A PromotionGates message of a model's row (None: the defaults, revision 0)."""
    gates = gates_of_row(row)
    message = registry_pb2.PromotionGates(
        model=model,
        min_examples=gates.min_examples,
        require_schema_compatible=gates.require_schema_compatible,
    )
    if gates.min_score is not None:
        message.min_score.CopyFrom(
            registry_pb2.ScoreGate(
                metric=gates.min_score.metric, threshold=gates.min_score.threshold
            )
        )
    if gates.max_warmup_latency_ms is not None:
        message.max_warmup_latency_ms = gates.max_warmup_latency_ms
    if row is not None:
        message.revision = row["revision"]
        message.updated_at.CopyFrom(timestamp(row["updated_at"]))
        message.updated_by = row["updated_by"]
    return message


def gates_json(gates: PromotionGates) -> dict[str, Any]:
    """The gates as JSON data (audit details)."""
    return dataclasses.asdict(gates)


def new_evaluation(request: registry_pb2.RecordEvaluationRequest) -> NewEvaluation:
    """The evaluation a RecordEvaluation request reports (an unset time: None)."""
    return NewEvaluation(
        model=request.model,
        version=request.version,
        source=request.source,
        metric=request.metric,
        value=request.value,
        examples=request.examples,
        at=request.at.ToDatetime(tzinfo=dt.UTC) if request.HasField("at") else None,
    )


def evaluation_of_row(row: Mapping[str, Any]) -> Evaluation:
    """The pure core's value of an evaluations row."""
    return Evaluation(row["source"], row["metric"], row["value"], row["examples"], row["at"])


def evaluation_message(row: Mapping[str, Any]) -> registry_pb2.Evaluation:
    """An Evaluation message of an evaluations row."""
    return registry_pb2.Evaluation(
        model=row["model"],
        version=row["version"],
        source=row["source"],
        metric=row["metric"],
        value=row["value"],
        examples=row["examples"],
        at=timestamp(row["at"]),
        recorded_at=timestamp(row["recorded_at"]),
    )


def report_json(report: GateReport) -> list[dict[str, Any]]:
    """Every gate's result as JSON data (audit details)."""
    return [dataclasses.asdict(result) for result in report.results]
