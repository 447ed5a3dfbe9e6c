"""The join's orchestration: decode, pair up through :class:`Join`, emit, dead-letter.

No Kafka here: the Faust agents in :mod:`headwater.services.trainer.join.streams`
hand each record over as an :class:`IncomingRecord`, give the slots as a
mapping (a changelog-backed table), and say how to emit an example and how to
dead-letter a record. A record that cannot be used (undecodable, missing ids,
a key that is not the prediction id) is dead-lettered with the reason and the
agents carry on. An example is emitted with the trace headers of its prediction
(else those of its feedback), so its trace goes on from the prediction's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TypeVar

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
from headwater.shared.bus.codec import decode_event, encode_event
from headwater.shared.bus.tracing import TRACE_HEADERS
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2

E = TypeVar("E", events_pb2.PredictionEvent, events_pb2.FeedbackEvent)

log = logging.getLogger(__name__)

#: Longest trace header value kept in a join slot (a ``tracestate`` is at most 512 characters).
MAX_TRACE_HEADER_BYTES = 1024

_SIDE_OF_STATE = {
    SlotState.AWAITING_FEEDBACK: "prediction",
    SlotState.AWAITING_PREDICTION: "feedback",
    SlotState.JOINED: "joined",
}


@dataclass(frozen=True)
class IncomingRecord:
    """One record of ``predictions`` or ``feedback``, as read from the broker."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def valued_headers(self) -> tuple[tuple[str, bytes], ...]:
        """The headers that have a value (a header may be sent with a null one)."""
        return tuple((k, v) for k, v in self.headers if v is not None)

    @property
    def trace(self) -> TraceHeaders:
        """The W3C trace headers (``traceparent``, ``tracestate``) the record carries.

        >>> IncomingRecord("t", 0, None, None, (("TraceParent", b"00-1"), ("x", b"y"))).trace
        (('traceparent', b'00-1'),)
        """
        return tuple(
            (name.lower(), value)
            for name, value in self.valued_headers
            if name.lower() in TRACE_HEADERS and len(value) <= MAX_TRACE_HEADER_BYTES
        )


Emit = Callable[[events_pb2.LabeledExample, TraceHeaders], Awaitable[None]]
Reject = Callable[[IncomingRecord, str], Awaitable[None]]


class JoinService:
    """Pairs predictions with feedback and emits one LabeledExample per pair.

    Args:
        join: The state machine (its TTL).
        slots: Join state per prediction id (written only from within an agent).
        emit: Sends an example to ``examples`` (keyed by its model) with the
            trace headers it continues (the prediction's, else the feedback's); raises
            :class:`Unavailable` when the broker cannot take it (the record is
            then retried: nothing was written).
        reject: Dead-letters a record with a reason.
        clock: Wall-clock seconds (the TTL is measured in processing time).

    """

    def __init__(
        self,
        join: Join,
        slots: MutableMapping[str, Slot],
        emit: Emit,
        reject: Reject,
        clock: Callable[[], float],
    ) -> None:
        self.join = join
        self.slots = slots
        self._emit = emit
        self._reject = reject
        self._clock = clock

    async def on_prediction(self, record: IncomingRecord) -> JoinOutcome | None:
        """Handle one prediction record; None when it was dead-lettered."""
        return await self._arrive(
            record,
            "prediction",
            events_pb2.PredictionEvent,
            check_prediction,
            self.join.on_prediction,
        )

    async def on_feedback(self, record: IncomingRecord) -> JoinOutcome | None:
        """Handle one feedback record; None when it was dead-lettered."""
        return await self._arrive(
            record, "feedback", events_pb2.FeedbackEvent, check_feedback, self.join.on_feedback
        )

    async def _arrive(
        self,
        record: IncomingRecord,
        side: str,
        cls: type[E],
        check: Callable[[E], E],
        arrive: Callable[..., JoinOutcome],
    ) -> JoinOutcome | None:
        try:
            event = check(decode_event(cls, record.value, record.valued_headers))
            key = _checked_key(record, event.prediction_id)
        except InvalidInput as err:
            await self._dead_letter(record, side, str(err))
            return None
        outcome = arrive(
            self.slots,
            key,
            encode_event(event),
            now=self._clock(),
            partition=record.partition,
            trace=record.trace,
        )
        await self._act(key, outcome, side)
        return outcome

    async def _act(self, key: str, outcome: JoinOutcome, side: str) -> None:
        """Emit a joined pair's example, then write the slot, then count.

        If emitting raises, nothing is written: the waiting side stays, and the
        record, retried or redelivered, joins again.
        """
        if outcome.kind is JoinOutcomeKind.JOINED:
            prediction = events_pb2.PredictionEvent.FromString(outcome.prediction)
            feedback = events_pb2.FeedbackEvent.FromString(outcome.feedback)
            example = labeled_example(prediction, feedback, now=self._clock())
            await self._emit(example, outcome.prediction_trace or outcome.feedback_trace)
            metrics.EXAMPLES_EMITTED.labels(model=example.model).inc()
        outcome.store(self.slots, key)
        metrics.JOIN_EVENTS.labels(side=side, outcome=outcome.kind.value).inc()
        if outcome.replaced_expired is not None:
            metrics.JOIN_EXPIRED.labels(side=_SIDE_OF_STATE[outcome.replaced_expired]).inc()

    async def _dead_letter(self, record: IncomingRecord, side: str, reason: str) -> None:
        await self._reject(record, reason)
        metrics.JOIN_EVENTS.labels(side=side, outcome="dead_lettered").inc()

    def sweep(self) -> Iterator[tuple[str, Slot]]:
        """Yield the expired slots (id and slot) for the caller to delete, counting them."""
        now = self._clock()
        for key in expired(self.slots, now):
            slot = self.slots.get(key)
            if slot is None:
                continue
            metrics.JOIN_EXPIRED.labels(side=_SIDE_OF_STATE[slot.state]).inc()
            yield key, slot


def _checked_key(record: IncomingRecord, prediction_id: str) -> str:
    """The record key, which must be the prediction id (the join is partition-local)."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    if key != prediction_id:
        raise InvalidInput(
            f"record key {key!r} is not the prediction id {prediction_id!r}: predictions and "
            "feedback must be keyed by prediction id so that both land in the same partition"
        )
    return prediction_id
