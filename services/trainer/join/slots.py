"""The join's state: one :class:`Slot` per (answered) prediction id, and when it expires.

Pure values, no I/O. A slot holds whichever side arrived first (or remembers
that the pair was already joined), the shadow predictions of the prediction,
and when it becomes void; the join's state machine
(:mod:`headwater.services.trainer.join.pairing`) reads them, the caller keeps
them in any ``MutableMapping`` (a dict in tests, a changelog-backed Faust table
in the trainer; the codec is :mod:`headwater.services.trainer.join.slot_codec`).

>>> slot = Slot(SlotState.AWAITING_FEEDBACK, expires_at=60.0, partition=0, payload=b"prediction")
>>> slot.is_expired(59.0), slot.is_expired(60.0)
(False, True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum

#: Record headers of a trace context (``traceparent``, ``tracestate``): name, value pairs.
TraceHeaders = tuple[tuple[str, bytes], ...]


class SlotState(Enum):
    """What a slot is waiting for."""

    AWAITING_FEEDBACK = 1
    AWAITING_PREDICTION = 2
    JOINED = 3
    #: Only shadow predictions are there: the answered prediction and its label are awaited.
    AWAITING_BOTH = 4


@dataclass(frozen=True)
class WaitingShadow:
    """A shadow prediction waiting in its answer's slot for the label.

    Attributes:
        prediction_id: The shadow prediction's own id.
        payload: The encoded shadow prediction.
        trace: Its trace headers.

    """

    prediction_id: str
    payload: bytes
    trace: TraceHeaders = ()


@dataclass(frozen=True)
class Slot:
    """The join state of one (answered) prediction id.

    Attributes:
        state: Which side is present, or that the pair is joined.
        expires_at: Processing time (seconds since the epoch) after which the slot is void.
        partition: Source partition of the event that wrote it (where its changelog lives).
        payload: The encoded event waiting for its partner; empty once joined.
        trace: The trace headers of the waiting event; empty once joined.
        label: In a ``JOINED`` slot, the encoded feedback that joined, kept so that
            a late shadow prediction still joins (empty in slots written before).
        label_trace: The trace headers of ``label``.
        shadows: Shadow predictions waiting for the label (only while there is none).
        joined_shadows: Ids of the shadow predictions already joined with the label.

    """

    state: SlotState
    expires_at: float
    partition: int
    payload: bytes = b""
    trace: TraceHeaders = ()
    label: bytes = b""
    label_trace: TraceHeaders = ()
    shadows: tuple[WaitingShadow, ...] = ()
    joined_shadows: tuple[str, ...] = ()

    def is_expired(self, now: float) -> bool:
        """Whether the slot is void at processing time ``now``."""
        return now >= self.expires_at

    def knows_shadow(self, prediction_id: str) -> bool:
        """Whether the shadow prediction ``prediction_id`` is waiting here or was joined."""
        return prediction_id in self.joined_shadows or any(
            shadow.prediction_id == prediction_id for shadow in self.shadows
        )

    def feedback(self) -> tuple[bytes, TraceHeaders] | None:
        """The label a shadow arriving now joins with (and its trace); None while there is none.

        >>> Slot(SlotState.AWAITING_PREDICTION, 9.0, 0, b"f", (("traceparent", b"t"),)).feedback()
        (b'f', (('traceparent', b't'),))
        >>> Slot(SlotState.JOINED, 9.0, 0, label=b"f").feedback()
        (b'f', ())
        >>> Slot(SlotState.AWAITING_FEEDBACK, 9.0, 0, b"p").feedback() is None
        True
        """
        if self.state is SlotState.AWAITING_PREDICTION:
            return self.payload, self.trace
        if self.state is SlotState.JOINED:
            return self.label, self.label_trace
        return None


def expired(slots: Mapping[str, Slot], now: float) -> Iterator[str]:
    """The ids of the slots that are void at ``now`` (for a TTL sweep to delete).

    >>> slots = {"a": Slot(SlotState.JOINED, 5.0, 0), "b": Slot(SlotState.JOINED, 50.0, 0)}
    >>> list(expired(slots, now=10.0))
    ['a']
    """
    for key, slot in list(slots.items()):
        if slot.is_expired(now):
            yield key
