"""The feedback join: pair each prediction with its ground truth, at most once.

Pure logic, no I/O. One :class:`Slot` per prediction id holds whichever side
arrived first (or remembers that the pair was already joined); the caller keeps
the slots in any ``MutableMapping`` (a dict in tests, a changelog-backed Faust
table in the trainer) and passes the current processing time in, so the state
machine is deterministic.

The state machine only reads the slots: each :class:`JoinOutcome` carries the slot
to write, and the caller writes it (:meth:`JoinOutcome.store`) once it has acted on
the outcome. A joined pair is emitted first and marked ``JOINED`` after, so a
failed emit leaves the waiting side in place and a redelivery joins again (the
example id makes a second emit a duplicate downstream) instead of finding the
pair joined and the example lost.

Every slot lives ``ttl_s`` seconds from the moment it was written:

* a prediction waits up to the TTL for its feedback, feedback that comes first
  waits up to the TTL for its prediction;
* when the other side arrives in time the pair is joined exactly once: the slot
  becomes ``JOINED`` and stays another TTL so that redelivered duplicates of
  either side are recognised and ignored;
* an expired slot is as good as absent (the outcome does not depend on when the
  sweep ran); :func:`expired` lists the slots a periodic sweep should delete.

The waiting side's W3C trace headers (``traceparent``, ``tracestate``) are kept
in its slot, so a joined :class:`JoinOutcome` carries the trace of both sides.

>>> join = Join(ttl_s=60.0)
>>> slots: dict[str, Slot] = {}
>>> waiting = join.on_prediction(slots, "p1", b"prediction", now=0.0, partition=0)
>>> waiting.kind
<JoinOutcomeKind.WAITING: 'waiting'>
>>> waiting.store(slots, "p1")
>>> outcome = join.on_feedback(slots, "p1", b"label", now=5.0, partition=0)
>>> outcome.kind, outcome.prediction, outcome.feedback
(<JoinOutcomeKind.JOINED: 'joined'>, b'prediction', b'label')
>>> slots["p1"].state  # not written yet: emit the example, then store
<SlotState.AWAITING_FEEDBACK: 1>
>>> outcome.store(slots, "p1")
>>> join.on_feedback(slots, "p1", b"label", now=6.0, partition=0).kind
<JoinOutcomeKind.DUPLICATE: 'duplicate'>
>>> sorted(expired(slots, now=100.0))
['p1']
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from headwater.shared.errors import InvalidInput

#: Record headers of a trace context (``traceparent``, ``tracestate``): name, value pairs.
TraceHeaders = tuple[tuple[str, bytes], ...]


class SlotState(Enum):
    """What a slot is waiting for."""

    AWAITING_FEEDBACK = 1
    AWAITING_PREDICTION = 2
    JOINED = 3


@dataclass(frozen=True)
class Slot:
    """The join state of one prediction id.

    Attributes:
        state: Which side is present, or that the pair is joined.
        expires_at: Processing time (seconds since the epoch) after which the slot is void.
        partition: Source partition of the event that wrote it (where its changelog lives).
        payload: The encoded event waiting for its partner; empty once joined.
        trace: The trace headers of the waiting event; empty once joined.

    """

    state: SlotState
    expires_at: float
    partition: int
    payload: bytes = b""
    trace: TraceHeaders = ()

    def is_expired(self, now: float) -> bool:
        """Whether the slot is void at processing time ``now``."""
        return now >= self.expires_at


class JoinOutcomeKind(StrEnum):
    """What an arriving event did to the join."""

    WAITING = "waiting"
    JOINED = "joined"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class JoinOutcome:
    """The result of one arriving event; ``prediction``/``feedback`` are set when joined.

    Attributes:
        kind: Waiting, joined or duplicate.
        prediction: The encoded prediction of a joined pair.
        feedback: The encoded feedback of a joined pair.
        replaced_expired: The state of an expired slot this event replaces.
        slot: The slot to write under the prediction id (None: leave it as it is).
        prediction_trace: The trace headers of a joined pair's prediction.
        feedback_trace: The trace headers of a joined pair's feedback.

    """

    kind: JoinOutcomeKind
    prediction: bytes = b""
    feedback: bytes = b""
    replaced_expired: SlotState | None = None
    slot: Slot | None = None
    prediction_trace: TraceHeaders = ()
    feedback_trace: TraceHeaders = ()

    def store(self, slots: MutableMapping[str, Slot], key: str) -> None:
        """Write the new slot, once the outcome is acted on (a joined pair emitted)."""
        if self.slot is not None:
            slots[key] = self.slot


@dataclass(frozen=True)
class Join:
    """The join state machine for a given TTL.

    Args:
        ttl_s: How long either side waits for the other, and how long a joined
            id is remembered to ignore duplicates.

    """

    ttl_s: float

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise InvalidInput(f"join ttl must be positive, got {self.ttl_s}")

    def on_prediction(
        self,
        slots: Mapping[str, Slot],
        prediction_id: str,
        payload: bytes,
        *,
        now: float,
        partition: int,
        trace: TraceHeaders = (),
    ) -> JoinOutcome:
        """A prediction arrived: wait for its feedback, or join with feedback already there.

        >>> join, slots = Join(ttl_s=10.0), {}
        >>> first = join.on_feedback(slots, "p", b"f", now=0.0, partition=1)
        >>> first.kind
        <JoinOutcomeKind.WAITING: 'waiting'>
        >>> first.store(slots, "p")
        >>> joined = join.on_prediction(slots, "p", b"x", now=9.0, partition=1)
        >>> joined.kind
        <JoinOutcomeKind.JOINED: 'joined'>
        >>> joined.store(slots, "p")
        >>> join.on_prediction(slots, "p", b"x", now=9.5, partition=1).kind
        <JoinOutcomeKind.DUPLICATE: 'duplicate'>
        """
        return self._arrive(
            slots,
            prediction_id,
            payload,
            now=now,
            partition=partition,
            trace=trace,
            waiting_for_me=SlotState.AWAITING_PREDICTION,
            waiting_for_other=SlotState.AWAITING_FEEDBACK,
        )

    def on_feedback(
        self,
        slots: Mapping[str, Slot],
        prediction_id: str,
        payload: bytes,
        *,
        now: float,
        partition: int,
        trace: TraceHeaders = (),
    ) -> JoinOutcome:
        """Feedback arrived: join with its waiting prediction, or wait up to the TTL for it.

        Feedback for a prediction whose slot expired starts waiting afresh:

        >>> join, slots = Join(ttl_s=10.0), {}
        >>> join.on_prediction(slots, "p", b"x", now=0.0, partition=0).store(slots, "p")
        >>> late = join.on_feedback(slots, "p", b"f", now=10.0, partition=0)
        >>> late.kind, late.replaced_expired
        (<JoinOutcomeKind.WAITING: 'waiting'>, <SlotState.AWAITING_FEEDBACK: 1>)
        >>> late.store(slots, "p")
        >>> slots["p"].state
        <SlotState.AWAITING_PREDICTION: 2>
        """
        return self._arrive(
            slots,
            prediction_id,
            payload,
            now=now,
            partition=partition,
            trace=trace,
            waiting_for_me=SlotState.AWAITING_FEEDBACK,
            waiting_for_other=SlotState.AWAITING_PREDICTION,
        )

    def _arrive(
        self,
        slots: Mapping[str, Slot],
        key: str,
        payload: bytes,
        *,
        now: float,
        partition: int,
        trace: TraceHeaders,
        waiting_for_me: SlotState,
        waiting_for_other: SlotState,
    ) -> JoinOutcome:
        slot = slots.get(key)
        replaced = None
        if slot is not None and slot.is_expired(now):
            replaced, slot = slot.state, None
        if slot is None:
            waiting = Slot(waiting_for_other, now + self.ttl_s, partition, payload, trace)
            return JoinOutcome(JoinOutcomeKind.WAITING, replaced_expired=replaced, slot=waiting)
        if slot.state is not waiting_for_me:
            # The same side again (a redelivery), or the pair is already joined.
            return JoinOutcome(JoinOutcomeKind.DUPLICATE)
        joined = Slot(SlotState.JOINED, now + self.ttl_s, partition)
        mine, theirs = (payload, trace), (slot.payload, slot.trace)
        prediction, feedback = (
            (theirs, mine) if waiting_for_me is SlotState.AWAITING_FEEDBACK else (mine, theirs)
        )
        return JoinOutcome(
            JoinOutcomeKind.JOINED,
            prediction[0],
            feedback[0],
            slot=joined,
            prediction_trace=prediction[1],
            feedback_trace=feedback[1],
        )


def expired(slots: Mapping[str, Slot], now: float) -> Iterator[str]:
    """The ids of the slots that are void at ``now`` (for a TTL sweep to delete).

    >>> slots = {"a": Slot(SlotState.JOINED, 5.0, 0), "b": Slot(SlotState.JOINED, 50.0, 0)}
    >>> list(expired(slots, now=10.0))
    ['a']
    """
    for key, slot in list(slots.items()):
        if slot.is_expired(now):
            yield key


_HEADER = struct.Struct(">BdI")
#: Set in the state byte when trace headers follow the fixed header (older slots lack them).
_TRACED = 0x80
_COUNT = struct.Struct(">B")
_NAME = struct.Struct(">B")
_VALUE = struct.Struct(">H")


def encode_slot(slot: Slot) -> bytes:
    """Serialise a slot for a changelog-backed table (state, expiry, partition, trace, payload).

    A slot without trace headers is written as before trace headers existed;
    with them, the state byte has its high bit set and the headers follow the
    fixed header as a count and length-prefixed names and values.

    >>> slot = Slot(SlotState.AWAITING_FEEDBACK, 12.5, 3, b"event")
    >>> decode_slot(encode_slot(slot)) == slot
    True
    >>> traced = Slot(SlotState.AWAITING_FEEDBACK, 12.5, 3, b"event", (("traceparent", b"00-ab"),))
    >>> decode_slot(encode_slot(traced)) == traced
    True

    Raises:
        InvalidInput: More than 255 trace headers, a name over 255 bytes or a
            value over 65535 bytes.

    """
    if not slot.trace:
        return _HEADER.pack(slot.state.value, slot.expires_at, slot.partition) + slot.payload
    header = _HEADER.pack(slot.state.value | _TRACED, slot.expires_at, slot.partition)
    return header + _encode_trace(slot.trace) + slot.payload


def _encode_trace(trace: TraceHeaders) -> bytes:
    if len(trace) > 255:
        raise InvalidInput(f"a join slot holds at most 255 trace headers, got {len(trace)}")
    parts = [_COUNT.pack(len(trace))]
    for name, value in trace:
        encoded = name.encode("utf-8")
        if len(encoded) > 255 or len(value) > 65535:
            raise InvalidInput(f"trace header {name[:64]!r} too long for a join slot")
        parts += [_NAME.pack(len(encoded)), encoded, _VALUE.pack(len(value)), value]
    return b"".join(parts)


def decode_slot(data: bytes) -> Slot:
    """Parse what :func:`encode_slot` wrote (with or without trace headers).

    Raises:
        InvalidInput: The bytes are not an encoded slot.

    >>> decode_slot(b"xx")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: join slot too short: 2 bytes

    """
    if len(data) < _HEADER.size:
        raise InvalidInput(f"join slot too short: {len(data)} bytes")
    state, expires_at, partition = _HEADER.unpack_from(data)
    try:
        slot_state = SlotState(state & ~_TRACED)
    except ValueError as err:
        raise InvalidInput(f"join slot has unknown state {state}") from err
    trace: TraceHeaders = ()
    offset = _HEADER.size
    if state & _TRACED:
        trace, offset = _decode_trace(data, offset)
    return Slot(slot_state, expires_at, partition, bytes(data[offset:]), trace)


def _decode_trace(data: bytes, offset: int) -> tuple[TraceHeaders, int]:
    """The trace headers at ``offset`` and the offset after them."""
    try:
        (count,) = _COUNT.unpack_from(data, offset)
        offset += _COUNT.size
        headers = []
        for _ in range(count):
            (size,) = _NAME.unpack_from(data, offset)
            name = bytes(data[offset + _NAME.size : offset + _NAME.size + size])
            offset += _NAME.size + size
            (size,) = _VALUE.unpack_from(data, offset)
            value = bytes(data[offset + _VALUE.size : offset + _VALUE.size + size])
            offset += _VALUE.size + size
            if offset > len(data):
                raise InvalidInput("join slot trace headers truncated")
            headers.append((name.decode("utf-8"), value))
    except (struct.error, UnicodeDecodeError) as err:
        raise InvalidInput(f"join slot trace headers unreadable: {err}") from err
    return tuple(headers), offset
