"""The feedback join: pair each prediction with its ground truth, at most once.

Pure logic, no I/O. One :class:`~headwater.services.trainer.join.slots.Slot`
per prediction id holds whichever side arrived first (or remembers that the
pair was already joined); the caller keeps the slots in any ``MutableMapping``
(a dict in tests, a changelog-backed Faust table in the trainer) and passes the
current processing time in, so the state machine is deterministic.

The state machine only reads the slots: each :class:`JoinOutcome` carries the slot
to write, and the caller writes it (:meth:`JoinOutcome.store`) once it has acted on
the outcome. A joined pair is emitted first and marked ``JOINED`` after, so a
failed emit leaves the waiting side in place and a redelivery joins again (the
example id makes a second emit a duplicate downstream) instead of finding the
pair joined and the example lost.

Every slot lives ``ttl_s`` seconds from the moment a prediction or feedback wrote it:

* a prediction waits up to the TTL for its feedback, feedback that comes first
  waits up to the TTL for its prediction;
* when the other side arrives in time the pair is joined exactly once: the slot
  becomes ``JOINED`` and stays another TTL so that redelivered duplicates of
  either side are recognised and ignored;
* an expired slot is as good as absent (the outcome does not depend on when the
  sweep ran); :func:`~headwater.services.trainer.join.slots.expired` lists the
  slots a periodic sweep should delete.

The waiting side's W3C trace headers (``traceparent``, ``tracestate``) are kept
in its slot, so a joined :class:`JoinOutcome` carries the trace of both sides.

A *shadow* prediction (a version that saw the request but did not answer it)
joins the slot of the prediction that answered (:meth:`Join.on_shadow`): it waits
there until the label comes, or joins at once when the label is already there,
so one label scores the answer and each of its shadows, each shadow once. A
``JOINED`` slot keeps the label for its TTL for shadows that come late. A shadow
never extends a slot's life: it waits as long as the slot it joined lives.

>>> from headwater.services.trainer.join.slots import expired
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
>>> late = join.on_shadow(slots, "p1", b"shadow", shadow_id="p1~v2", now=7.0, partition=0)
>>> late.kind, [(pair.prediction, pair.feedback) for pair in late.shadow_pairs]
(<JoinOutcomeKind.JOINED: 'joined'>, [(b'shadow', b'label')])
>>> sorted(expired(slots, now=100.0))
['p1']
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace
from enum import StrEnum

from headwater.services.trainer.join.slots import Slot, SlotState, TraceHeaders, WaitingShadow
from headwater.shared.errors import InvalidInput

#: Most shadow predictions one answered prediction may have (a shadow per shadow route).
MAX_SHADOWS_PER_ANSWER = 16


class JoinOutcomeKind(StrEnum):
    """What an arriving event did to the join."""

    WAITING = "waiting"
    JOINED = "joined"
    DUPLICATE = "duplicate"
    #: A shadow prediction whose answer was joined by a slot that kept no label
    #: (written before shadows joined): there is nothing left to join it with.
    MISSED = "missed"


@dataclass(frozen=True)
class JoinedPair:
    """An encoded prediction and the feedback it joined with, each with its trace headers.

    Attributes:
        prediction: The encoded prediction (an answer's or a shadow's).
        feedback: The encoded feedback.
        prediction_trace: The prediction's trace headers.
        feedback_trace: The feedback's trace headers.

    """

    prediction: bytes
    feedback: bytes
    prediction_trace: TraceHeaders = ()
    feedback_trace: TraceHeaders = ()


@dataclass(frozen=True)
class JoinOutcome:
    """The result of one arriving event.

    ``prediction``/``feedback`` are set when the event joined a prediction with
    its feedback, ``shadow_pairs`` when it joined shadow predictions with the label.

    Attributes:
        kind: Waiting, joined, duplicate or (a shadow) missed.
        prediction: The encoded prediction of a joined pair.
        feedback: The encoded feedback of a joined pair.
        replaced_expired: The state of an expired slot this event replaces.
        slot: The slot to write under the prediction id (None: leave it as it is).
        prediction_trace: The trace headers of a joined pair's prediction.
        feedback_trace: The trace headers of a joined pair's feedback.
        shadow_pairs: The shadow predictions joined by this event, each with the label.
        replaced_shadows: Shadow predictions that waited in vain in the replaced expired slot.

    """

    kind: JoinOutcomeKind
    prediction: bytes = b""
    feedback: bytes = b""
    replaced_expired: SlotState | None = None
    slot: Slot | None = None
    prediction_trace: TraceHeaders = ()
    feedback_trace: TraceHeaders = ()
    shadow_pairs: tuple[JoinedPair, ...] = ()
    replaced_shadows: int = 0

    def store(self, slots: MutableMapping[str, Slot], key: str) -> None:
        """Write the new slot, once the outcome is acted on (a joined pair emitted)."""
        if self.slot is not None:
            slots[key] = self.slot

    @property
    def pairs(self) -> tuple[JoinedPair, ...]:
        """Every pair this event joined: its prediction with the feedback first, then shadows."""
        if not self.prediction:
            return self.shadow_pairs
        own = JoinedPair(self.prediction, self.feedback, self.prediction_trace, self.feedback_trace)
        return (own, *self.shadow_pairs)


_DUPLICATE = JoinOutcome(JoinOutcomeKind.DUPLICATE)


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
        slot, gone = _live(slots, prediction_id, now)
        if slot is None or slot.state is SlotState.AWAITING_BOTH:
            shadows = slot.shadows if slot is not None else ()
            waiting = Slot(
                SlotState.AWAITING_FEEDBACK,
                now + self.ttl_s,
                partition,
                payload,
                trace,
                shadows=shadows,
            )
            return _replacing(JoinOutcome(JoinOutcomeKind.WAITING, slot=waiting), gone)
        if slot.state is not SlotState.AWAITING_PREDICTION:
            return _DUPLICATE  # a redelivery, or the pair is already joined
        joined = Slot(
            SlotState.JOINED,
            now + self.ttl_s,
            partition,
            label=slot.payload,
            label_trace=slot.trace,
            joined_shadows=slot.joined_shadows,
        )
        return JoinOutcome(
            JoinOutcomeKind.JOINED,
            payload,
            slot.payload,
            slot=joined,
            prediction_trace=trace,
            feedback_trace=slot.trace,
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

        Either way it joins the shadow predictions waiting in the slot.
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
        slot, gone = _live(slots, prediction_id, now)
        if slot is None or slot.state is SlotState.AWAITING_BOTH:
            shadows = slot.shadows if slot is not None else ()
            waiting = Slot(
                SlotState.AWAITING_PREDICTION,
                now + self.ttl_s,
                partition,
                payload,
                trace,
                joined_shadows=_ids(shadows),
            )
            pairs = _pairs(shadows, payload, trace)
            outcome = JoinOutcome(JoinOutcomeKind.WAITING, slot=waiting, shadow_pairs=pairs)
            return _replacing(outcome, gone)
        if slot.state is not SlotState.AWAITING_FEEDBACK:
            return _DUPLICATE  # a redelivery (the first label wins), or already joined
        joined = Slot(
            SlotState.JOINED,
            now + self.ttl_s,
            partition,
            label=payload,
            label_trace=trace,
            joined_shadows=_ids(slot.shadows),
        )
        return JoinOutcome(
            JoinOutcomeKind.JOINED,
            slot.payload,
            payload,
            slot=joined,
            prediction_trace=slot.trace,
            feedback_trace=trace,
            shadow_pairs=_pairs(slot.shadows, payload, trace),
        )

    def on_shadow(
        self,
        slots: Mapping[str, Slot],
        answered_id: str,
        payload: bytes,
        *,
        shadow_id: str,
        now: float,
        partition: int,
        trace: TraceHeaders = (),
    ) -> JoinOutcome:
        """A shadow prediction (its own id ``shadow_id``) arrived: join its answer's label, or wait.

        A shadow that comes before its answered prediction opens the slot (waiting
        for both); later ones, and the prediction, join it; the label joins them all:

        >>> join, slots = Join(ttl_s=10.0), {}
        >>> def shadow(version: int, now: float) -> JoinOutcome:
        ...     payload, own_id = b"s%d" % version, f"p~v{version}"
        ...     return join.on_shadow(slots, "p", payload, shadow_id=own_id, now=now, partition=0)
        >>> shadow(2, now=0.0).store(slots, "p")
        >>> slots["p"].state, [shadow.prediction_id for shadow in slots["p"].shadows]
        (<SlotState.AWAITING_BOTH: 4>, ['p~v2'])
        >>> join.on_prediction(slots, "p", b"x", now=1.0, partition=0).store(slots, "p")
        >>> shadow(3, now=1.5).store(slots, "p")
        >>> shadow(2, now=2.0).kind  # redelivered
        <JoinOutcomeKind.DUPLICATE: 'duplicate'>
        >>> labelled = join.on_feedback(slots, "p", b"f", now=3.0, partition=0)
        >>> labelled.kind, labelled.prediction
        (<JoinOutcomeKind.JOINED: 'joined'>, b'x')
        >>> [(pair.prediction, pair.feedback) for pair in labelled.shadow_pairs]
        [(b's2', b'f'), (b's3', b'f')]
        >>> labelled.store(slots, "p")
        >>> slots["p"].label, slots["p"].joined_shadows  # kept for late shadows
        (b'f', ('p~v2', 'p~v3'))
        >>> shadow(3, now=4.0).kind  # redelivered after the join
        <JoinOutcomeKind.DUPLICATE: 'duplicate'>

        A shadow that comes after the label joins at once, whether the answered
        prediction is there yet or not, and only once:

        >>> slots = {}
        >>> join.on_feedback(slots, "q", b"f", now=0.0, partition=0).store(slots, "q")
        >>> early = join.on_shadow(slots, "q", b"s", shadow_id="q~v2", now=1.0, partition=0)
        >>> early.kind, [(pair.prediction, pair.feedback) for pair in early.shadow_pairs]
        (<JoinOutcomeKind.JOINED: 'joined'>, [(b's', b'f')])
        >>> early.store(slots, "q")
        >>> join.on_prediction(slots, "q", b"x", now=2.0, partition=0).shadow_pairs
        ()

        A shadow whose answer is never labelled expires with its answer's slot (a
        shadow does not extend it), and is lost with it:

        >>> from headwater.services.trainer.join.slots import expired
        >>> join, slots = Join(ttl_s=10.0), {}
        >>> join.on_prediction(slots, "r", b"x", now=0.0, partition=0).store(slots, "r")
        >>> late = join.on_shadow(slots, "r", b"s", shadow_id="r~v2", now=5.0, partition=0)
        >>> late.store(slots, "r")
        >>> slots["r"].expires_at, list(expired(slots, now=10.0)), len(slots["r"].shadows)
        (10.0, ['r'], 1)
        >>> join.on_feedback(slots, "r", b"f", now=10.0, partition=0).replaced_shadows  # too late
        1

        Raises:
            InvalidInput: The answer has :data:`MAX_SHADOWS_PER_ANSWER` shadows already.

        """
        slot, gone = _live(slots, answered_id, now)
        shadow = WaitingShadow(shadow_id, payload, trace)
        if slot is None:
            waiting = Slot(SlotState.AWAITING_BOTH, now + self.ttl_s, partition, shadows=(shadow,))
            return _replacing(JoinOutcome(JoinOutcomeKind.WAITING, slot=waiting), gone)
        if slot.knows_shadow(shadow_id):
            return _DUPLICATE
        if len(slot.shadows) + len(slot.joined_shadows) >= MAX_SHADOWS_PER_ANSWER:
            raise InvalidInput(
                f"answered prediction {answered_id!r} has {MAX_SHADOWS_PER_ANSWER} shadow "
                f"predictions already: shadow {shadow_id!r} is one too many"
            )
        label = slot.feedback()
        if label is None:  # the shadow waits as long as the slot does
            waiting = replace(slot, shadows=(*slot.shadows, shadow))
            return JoinOutcome(JoinOutcomeKind.WAITING, slot=waiting)
        feedback, feedback_trace = label
        if not feedback:
            return JoinOutcome(JoinOutcomeKind.MISSED)
        joined = replace(slot, joined_shadows=(*slot.joined_shadows, shadow_id))
        pair = JoinedPair(payload, feedback, trace, feedback_trace)
        return JoinOutcome(JoinOutcomeKind.JOINED, slot=joined, shadow_pairs=(pair,))


def _live(slots: Mapping[str, Slot], key: str, now: float) -> tuple[Slot | None, Slot | None]:
    """The slot under ``key`` if it is alive, and the expired one an arrival replaces."""
    slot = slots.get(key)
    if slot is not None and slot.is_expired(now):
        return None, slot
    return slot, None


def _replacing(outcome: JoinOutcome, gone: Slot | None) -> JoinOutcome:
    """``outcome``, saying what the expired slot ``gone`` it replaces held."""
    if gone is None:
        return outcome
    return replace(outcome, replaced_expired=gone.state, replaced_shadows=len(gone.shadows))


def _ids(shadows: tuple[WaitingShadow, ...]) -> tuple[str, ...]:
    return tuple(shadow.prediction_id for shadow in shadows)


def _pairs(
    shadows: tuple[WaitingShadow, ...], feedback: bytes, trace: TraceHeaders
) -> tuple[JoinedPair, ...]:
    return tuple(JoinedPair(s.payload, feedback, s.trace, trace) for s in shadows)
