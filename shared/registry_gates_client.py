"""The registry client's promotion gate calls: gates, evaluations (mixed into RegistryClient).

    async with RegistryClient("127.0.0.1:50051", actor="me") as registry:
        await registry.set_promotion_gates(
            "churn", promotion_gates(min_score=("accuracy", 0.85), min_examples=500)
        )
        await registry.record_evaluation("churn", 2, "trainer", "accuracy", 0.87, examples=900)
        await registry.start_rollout("churn", 2, "canary")  # FailedPrecondition if a gate fails

>>> gates = promotion_gates(min_score=("mae", 0.3), max_warmup_latency_ms=5)
>>> gates.min_score.metric, gates.HasField("require_schema_compatible"), gates.max_warmup_latency_ms
('mae', True, 5.0)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from headwater.shared.pb import registry_pb2, registry_pb2_grpc

R = TypeVar("R")


def promotion_gates(
    *,
    min_score: tuple[str, float] | None = None,
    min_examples: int = 0,
    require_schema_compatible: bool = True,
    max_warmup_latency_ms: float | None = None,
) -> registry_pb2.PromotionGates:
    """A PromotionGates message; what is left out is not enforced (the schema check is).

    Args:
        min_score: (metric, threshold): accuracy or rolling_accuracy at least the
            threshold, mae or rolling_mae at most it.
        min_examples: Least examples behind that score (0: no gate).
        require_schema_compatible: Whether the schema gate is enforced.
        max_warmup_latency_ms: Most warm-up latency on any gateway replica.

    """
    gates = registry_pb2.PromotionGates(
        min_examples=min_examples, require_schema_compatible=require_schema_compatible
    )
    if min_score is not None:
        metric, threshold = min_score
        gates.min_score.CopyFrom(registry_pb2.ScoreGate(metric=metric, threshold=threshold))
    if max_warmup_latency_ms is not None:
        gates.max_warmup_latency_ms = max_warmup_latency_ms
    return gates


class _Caller(Protocol):
    """What the calls need of the client that mixes them in."""

    _stub: registry_pb2_grpc.RegistryStub

    async def _write(self, method: Callable[..., Awaitable[R]], request: Any) -> R: ...

    async def _read(self, method: Callable[..., Awaitable[R]], request: Any) -> R: ...


class PromotionGateCalls:
    """Promotion gates and the evaluations they judge (RegistryClient has these methods)."""

    async def set_promotion_gates(
        self: _Caller, model: str, gates: registry_pb2.PromotionGates
    ) -> registry_pb2.PromotionGates:
        """Replace a model's gates (from :func:`promotion_gates`); returns them as stored."""
        request = registry_pb2.SetPromotionGatesRequest(model=model, gates=gates)
        return await self._write(self._stub.SetPromotionGates, request)

    async def get_promotion_gates(self: _Caller, model: str) -> registry_pb2.PromotionGates:
        """A model's gates (the defaults, revision 0, when never set)."""
        request = registry_pb2.GetPromotionGatesRequest(model=model)
        return await self._read(self._stub.GetPromotionGates, request)

    async def record_evaluation(
        self: _Caller,
        model: str,
        version: int,
        source: str,
        metric: str,
        value: float,
        *,
        examples: int = 0,
        at: dt.datetime | None = None,
    ) -> registry_pb2.Evaluation:
        """Report a version's evaluation (e.g. source ``trainer``, metric ``accuracy``).

        The registry keeps the latest per (model, version, metric, source): an
        older ``at`` than the one kept changes nothing; None means now.
        Returns the evaluation kept.
        """
        request = registry_pb2.RecordEvaluationRequest(
            model=model, version=version, source=source, metric=metric, value=value,
            examples=examples,
        )  # fmt: skip
        if at is not None:
            stamp = Timestamp()
            stamp.FromDatetime(at.astimezone(dt.UTC))
            request.at.CopyFrom(stamp)
        return await self._write(self._stub.RecordEvaluation, request)

    async def list_evaluations(
        self: _Caller, model: str, version: int
    ) -> list[registry_pb2.Evaluation]:
        """The latest evaluations of one version, by metric, then source."""
        request = registry_pb2.ListEvaluationsRequest(model=model, version=version)
        return list((await self._read(self._stub.ListEvaluations, request)).evaluations)
