"""The join's orchestration: one record in, the labelled examples it completes out.

A record of ``predictions`` or ``feedback`` takes one path, :meth:`JoinService._join_record`:

1. decode and check the event, and check that the record key is the id of the
   slot it joins: its prediction id, or for a shadow prediction the id of the
   prediction that answered (else dead-letter the record with the reason, and stop);
2. pair it through the pure :class:`Join`, which reads the slots and says what to do;
3. emit the example of each pair it completes: a prediction with its feedback,
   and each shadow prediction with the same feedback (each with the trace
   headers of its prediction, else those of its feedback, so its trace goes on
   from the prediction's);
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
from functools import partial
from typing import Generic, Protocol, TypeVar

from headwater.services.trainer import metrics
from headwater.services.trainer.join.events import (
    check_feedback,
    check_prediction,
    is_shadow,
    labeled_example,
)
from headwater.services.trainer.join.pairing import Join, JoinedPair, JoinOutcome
from headwater.services.trainer.join.slots import Slot, SlotState, TraceHeaders, expired
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
    SlotState.AWAITING_BOTH: None,  # only shadows: counted as such
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
    """One input of the join: its name in metrics, its check, its slot key, its join step.

    Attributes:
        name: The ``side`` label of its metrics.
        check: Raises ``InvalidInput`` when the event is of no use to the join.
        key: The id of the slot the event joins (its record key must be that id).
        key_name: What that id is called, and
        keyed_by: why the key must be it (both in the reason of a record keyed otherwise).
        step: The :class:`Join` method the event takes, bound for this event.

    """

    name: str
    check: Callable[[E], E]
    key: Callable[[E], str]
    key_name: str
    keyed_by: str
    step: Callable[[Join, E], Callable[..., JoinOutcome]]


_BY_PREDICTION_ID = (
    "predictions and feedback must be keyed by prediction id so that both land in the same "
    "partition"
)
_PREDICTIONS = _Side[events_pb2.PredictionEvent](
    name="prediction",
    check=check_prediction,
    key=lambda event: event.prediction_id,
    key_name="prediction id",
    keyed_by=_BY_PREDICTION_ID,
    step=lambda join, _: join.on_prediction,
)
_SHADOWS = _Side[events_pb2.PredictionEvent](
    name="shadow",
    check=check_prediction,
    key=lambda event: event.answered_prediction_id,
    key_name="answered prediction id",
    keyed_by="a shadow prediction must be keyed by the answered prediction id so that it "
    "lands in the partition of that prediction and its feedback",
    step=lambda join, event: partial(join.on_shadow, shadow_id=event.prediction_id),
)
_FEEDBACK = _Side[events_pb2.FeedbackEvent](
    name="feedback",
    check=check_feedback,
    key=lambda event: event.prediction_id,
    key_name="prediction id",
    keyed_by=_BY_PREDICTION_ID,
    step=lambda join, _: join.on_feedback,
)


class JoinService:
    """Pairs predictions (and their shadows) with feedback and emits a LabeledExample per pair.

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
        """Handle one prediction record (an answer's or a shadow's); None when dead-lettered."""
        try:
            event = record.decode(events_pb2.PredictionEvent)
        except InvalidInput as err:
            await self._reject(record, _PREDICTIONS.name, err)
            return None
        return await self._join_record(
            record, event, _SHADOWS if is_shadow(event) else _PREDICTIONS
        )

    async def handle_feedback(self, record: ConsumedRecord) -> JoinOutcome | None:
        """Handle one feedback record; None when it was dead-lettered."""
        try:
            event = record.decode(events_pb2.FeedbackEvent)
        except InvalidInput as err:
            await self._reject(record, _FEEDBACK.name, err)
            return None
        return await self._join_record(record, event, _FEEDBACK)

    async def _join_record(
        self, record: ConsumedRecord, event: E, side: _Side[E]
    ) -> JoinOutcome | None:
        """Check, pair, emit the examples of the pairs completed, then write the slot, count.

        If emitting raises, nothing is written: the waiting side stays, and the
        record, retried or redelivered, joins again.
        """
        try:
            key = _checked_key(record, side.check(event), side)
            outcome = side.step(self.join, event)(
                self.slots,
                key,
                encode_event(event),
                now=self._clock(),
                partition=record.partition,
                trace=record_trace(record),
            )
        except InvalidInput as err:
            await self._reject(record, side.name, err)
            return None
        for pair in outcome.pairs:
            await self._emit(pair)
        outcome.store(self.slots, key)
        metrics.JOIN_EVENTS.labels(side=side.name, outcome=outcome.kind.value).inc()
        if outcome.replaced_expired is not None:
            _count_expired(outcome.replaced_expired, outcome.replaced_shadows)
        return outcome

    async def _reject(self, record: ConsumedRecord, side: str, err: InvalidInput) -> None:
        """Dead-letter a record the join cannot use, with the reason; count it."""
        await self.outlet.reject(record, str(err))
        metrics.JOIN_EVENTS.labels(side=side, outcome="dead_lettered").inc()

    async def _emit(self, pair: JoinedPair) -> None:
        """The example of a joined pair (a prediction's or a shadow's), out through the outlet."""
        prediction = events_pb2.PredictionEvent.FromString(pair.prediction)
        feedback = events_pb2.FeedbackEvent.FromString(pair.feedback)
        example = labeled_example(prediction, feedback, now=self._clock())
        await self.outlet.emit(example, pair.prediction_trace or pair.feedback_trace)
        metrics.EXAMPLES_EMITTED.labels(model=example.model).inc()
        if is_shadow(prediction):
            metrics.SHADOW_EXAMPLES_EMITTED.labels(model=example.model).inc()

    def sweep(self) -> Iterator[tuple[str, Slot]]:
        """Yield the expired slots (id and slot) for the caller to delete, counting them."""
        now = self._clock()
        for key in expired(self.slots, now):
            slot = self.slots.get(key)
            if slot is None:
                continue
            _count_expired(slot.state, len(slot.shadows))
            yield key, slot


def _count_expired(state: SlotState, waiting_shadows: int) -> None:
    """Count what an expired slot held: its waiting side (or join), its waiting shadows."""
    side = _SIDE_OF_STATE[state]
    if side is not None:
        metrics.JOIN_EXPIRED.labels(side=side).inc()
    if waiting_shadows:
        metrics.JOIN_EXPIRED.labels(side="shadow").inc(waiting_shadows)


def _checked_key(record: ConsumedRecord, event: E, side: _Side[E]) -> str:
    """The record key, which must be the id of the slot the event joins (partition-local)."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    expected = side.key(event)
    if key != expected:
        raise InvalidInput(
            f"record key {key!r} is not the {side.key_name} {expected!r}: {side.keyed_by}"
        )
    return expected
