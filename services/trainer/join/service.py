"""The join's orchestration: one record in, at most one labelled example out.

A record of ``predictions`` or ``feedback`` takes one path, :meth:`JoinService._join_record`:

1. decode and check the event, and check that the record key is its prediction id
   (else dead-letter the record with the reason, and stop);
2. pair it through the pure :class:`Join`, which reads the slots and says what to do;
3. emit the example of a joined pair (with the trace headers of its prediction,
   else those of its feedback, so its trace goes on from the prediction's);
4. write the slot the join asked for, and count.

No Kafka here: the Faust agents in :mod:`headwater.services.trainer.join.streams`
hand each record over (through the bus's record policy) as a
:class:`~headwater.shared.bus.records.ConsumedRecord`, give the slots as a
mapping (a changelog-backed table), and one :class:`JoinOutlet` through which
examples and dead letters leave.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from headwater.services.trainer import metrics
from headwater.services.trainer.join.events import check_feedback, check_prediction, labeled_example
from headwater.services.trainer.join.slots import (
    Join,
    JoinOutcome,
    JoinOutcomeKind,
    Slot,
    SlotState,
    TraceHeaders,
    expired,
)
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.bus.tracing import TRACE_HEADERS
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2

E = TypeVar("E", events_pb2.PredictionEvent, events_pb2.FeedbackEvent)

#: Longest trace header value kept in a join slot (a ``tracestate`` is at most 512 characters).
MAX_TRACE_HEADER_BYTES = 1024

_SIDE_OF_STATE = {
    SlotState.AWAITING_FEEDBACK: "prediction",
    SlotState.AWAITING_PREDICTION: "feedback",
    SlotState.JOINED: "joined",
}


def record_trace(record: ConsumedRecord) -> TraceHeaders:
    """The W3C trace headers (``traceparent``, ``tracestate``) a record carries.

    Names are lower-cased; a header without a value, or one longer than
    :data:`MAX_TRACE_HEADER_BYTES`, is left out.

    >>> headers = (("TraceParent", b"00-1"), ("x", b"y"), ("tracestate", None))
    >>> record_trace(ConsumedRecord("t", 0, 0, None, None, headers))
    (('traceparent', b'00-1'),)
    """
    return tuple(
        (name.lower(), value)
        for name, value in record.valued_headers
        if name.lower() in TRACE_HEADERS and len(value) <= MAX_TRACE_HEADER_BYTES
    )


class JoinOutlet(Protocol):
    """Where the join's results leave (the Faust app's :class:`BrokerOutlet` fits)."""

    async def emit(self, example: events_pb2.LabeledExample, trace: TraceHeaders) -> None:
        """Send an example to ``examples`` (keyed by its model), continuing ``trace``.

        Raises:
            Unavailable: The broker cannot take it; nothing was written, so the
                record is retried and joins again.

        """

    async def reject(self, record: ConsumedRecord, reason: str) -> None:
        """Dead-letter a record with the reason."""


@dataclass(frozen=True)
class _Side(Generic[E]):
    """One input of the join: its name in metrics, its event, its check, its join step."""

    name: str
    event_type: type[E]
    check: Callable[[E], E]
    arrive: Callable[..., JoinOutcome]  # Join.on_prediction or Join.on_feedback


_PREDICTIONS = _Side("prediction", events_pb2.PredictionEvent, check_prediction, Join.on_prediction)
_FEEDBACK = _Side("feedback", events_pb2.FeedbackEvent, check_feedback, Join.on_feedback)


class JoinService:
    """Pairs predictions with feedback and emits one LabeledExample per pair.

    Args:
        join: The state machine (its TTL).
        slots: Join state per prediction id (written only from within an agent).
        outlet: Where examples and dead letters go.
        clock: Wall-clock seconds (the TTL is measured in processing time).

    """

    def __init__(
        self,
        join: Join,
        slots: MutableMapping[str, Slot],
        outlet: JoinOutlet,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.join = join
        self.slots = slots
        self.outlet = outlet
        self._clock = clock

    async def handle_prediction(self, record: ConsumedRecord) -> JoinOutcome | None:
        """Handle one prediction record; None when it was dead-lettered."""
        return await self._join_record(record, _PREDICTIONS)

    async def handle_feedback(self, record: ConsumedRecord) -> JoinOutcome | None:
        """Handle one feedback record; None when it was dead-lettered."""
        return await self._join_record(record, _FEEDBACK)

    async def _join_record(self, record: ConsumedRecord, side: _Side[E]) -> JoinOutcome | None:
        """Decode and check, pair, emit a joined pair's example, then write the slot, count.

        If emitting raises, nothing is written: the waiting side stays, and the
        record, retried or redelivered, joins again.
        """
        try:
            event = side.check(record.decode(side.event_type))
            key = _checked_key(record, event.prediction_id)
        except InvalidInput as err:
            await self.outlet.reject(record, str(err))
            metrics.JOIN_EVENTS.labels(side=side.name, outcome="dead_lettered").inc()
            return None
        outcome = side.arrive(
            self.join,
            self.slots,
            key,
            encode_event(event),
            now=self._clock(),
            partition=record.partition,
            trace=record_trace(record),
        )
        if outcome.kind is JoinOutcomeKind.JOINED:
            await self._emit(outcome)
        outcome.store(self.slots, key)
        metrics.JOIN_EVENTS.labels(side=side.name, outcome=outcome.kind.value).inc()
        if outcome.replaced_expired is not None:
            metrics.JOIN_EXPIRED.labels(side=_SIDE_OF_STATE[outcome.replaced_expired]).inc()
        return outcome

    async def _emit(self, joined: JoinOutcome) -> None:
        """The example of a joined pair, out through the outlet."""
        prediction = events_pb2.PredictionEvent.FromString(joined.prediction)
        feedback = events_pb2.FeedbackEvent.FromString(joined.feedback)
        example = labeled_example(prediction, feedback, now=self._clock())
        await self.outlet.emit(example, joined.prediction_trace or joined.feedback_trace)
        metrics.EXAMPLES_EMITTED.labels(model=example.model).inc()

    def sweep(self) -> Iterator[tuple[str, Slot]]:
        """Yield the expired slots (id and slot) for the caller to delete, counting them."""
        now = self._clock()
        for key in expired(self.slots, now):
            slot = self.slots.get(key)
            if slot is None:
                continue
            metrics.JOIN_EXPIRED.labels(side=_SIDE_OF_STATE[slot.state]).inc()
            yield key, slot


def _checked_key(record: ConsumedRecord, prediction_id: str) -> str:
    """The record key, which must be the prediction id (the join is partition-local)."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    if key != prediction_id:
        raise InvalidInput(
            f"record key {key!r} is not the prediction id {prediction_id!r}: predictions and "
            "feedback must be keyed by prediction id so that both land in the same partition"
        )
    return prediction_id
