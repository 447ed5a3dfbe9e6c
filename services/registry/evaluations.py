"""The evaluations sources report for promotion gates: their rules (pure, no I/O).

The trainer reports each learner's progressive-validation metrics (source
``trainer``), a gateway replica the latency of a version's warm-up (source
``gateway:<replica>``, metric ``warmup_latency_ms``). The registry keeps the
latest one per (model, version, metric, source).

>>> now = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
>>> score = NewEvaluation("churn", 2, "trainer", "accuracy", 0.9, examples=800)
>>> validate_new_evaluation(score, now).at == now  # unset: now
True
>>> latency = NewEvaluation("churn", 2, "gateway:gw 1", "warmup_latency_ms", 3.0)
>>> validate_new_evaluation(latency, now)
Traceback (most recent call last):
...
headwater.shared.errors.InvalidInput: invalid evaluation source 'gateway:gw 1': 1-128 letters, \
digits and . _ - : / @, starting with a letter or digit
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from dataclasses import dataclass

from headwater.services.registry.domain import validate_model_name
from headwater.shared.errors import InvalidInput

#: How far ahead of the registry's clock an evaluation's time may be: a time far in
#: the future would pin the evaluation, every later report being "older".
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
_METRIC = re.compile(r"[a-z][a-z0-9_.]{0,63}")


@dataclass(frozen=True)
class NewEvaluation:
    """An evaluation as a source reports it (``at`` None: measured now)."""

    model: str
    version: int
    source: str
    metric: str
    value: float
    examples: int = 0
    at: dt.datetime | None = None


def gateway_source(replica_id: str) -> str:
    """The source of what gateway replica ``replica_id`` measured (its warm-up latencies).

    >>> gateway_source("gw-1")
    'gateway:gw-1'
    """
    return f"gateway:{replica_id}"


def validate_new_evaluation(evaluation: NewEvaluation, now: dt.datetime) -> NewEvaluation:
    """Check a reported evaluation; return it with its time set (``now`` when unset).

    >>> later = dt.datetime(2025, 1, 1, 13, tzinfo=dt.UTC)
    >>> early = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
    >>> validate_new_evaluation(NewEvaluation("churn", 1, "trainer", "mae", 0.3, 5, later), early)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: evaluation time 2025-01-01T13:00:00+00:00 is ahead \
of the registry's clock (2025-01-01T12:00:00+00:00) by more than 0:05:00
    """
    validate_model_name(evaluation.model)
    if evaluation.version < 1:
        raise InvalidInput(f"an evaluation needs a version >= 1, got {evaluation.version}")
    if not _SOURCE.fullmatch(evaluation.source):
        raise InvalidInput(
            f"invalid evaluation source {evaluation.source!r}: 1-128 letters, digits and "
            ". _ - : / @, starting with a letter or digit"
        )
    if not _METRIC.fullmatch(evaluation.metric):
        raise InvalidInput(
            f"invalid metric name {evaluation.metric!r}: 1-64 lower-case letters, digits, "
            "_ and ., starting with a letter"
        )
    if not math.isfinite(evaluation.value):
        raise InvalidInput(f"evaluation {evaluation.metric} must be finite, got {evaluation.value}")
    if evaluation.examples < 0:
        raise InvalidInput(f"examples must be >= 0, got {evaluation.examples}")
    at = evaluation.at or now
    if at - now > MAX_CLOCK_SKEW:
        raise InvalidInput(
            f"evaluation time {at.isoformat()} is ahead of the registry's clock "
            f"({now.isoformat()}) by more than {MAX_CLOCK_SKEW}"
        )
    return dataclasses.replace(evaluation, at=at)
