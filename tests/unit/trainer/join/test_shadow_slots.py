"""Shadow predictions in the join: every order of arrival, redeliveries, TTL expiry, limits."""

from __future__ import annotations

import itertools

import pytest

from headwater.services.trainer.join.pairing import (
    MAX_SHADOWS_PER_ANSWER,
    Join,
    JoinOutcome,
    JoinOutcomeKind,
)
from headwater.services.trainer.join.slots import Slot, SlotState, expired
from headwater.shared.errors import InvalidInput

TTL = 30.0
ANSWER = "p"


def arrive(join: Join, slots: dict[str, Slot], event: str, now: float) -> JoinOutcome:
    """Feed one event: "prediction", "feedback" or a shadow's id ("p~v2"); store its slot."""
    if event == "prediction":
        outcome = join.on_prediction(slots, ANSWER, b"prediction", now=now, partition=0)
    elif event == "feedback":
        outcome = join.on_feedback(slots, ANSWER, b"feedback", now=now, partition=0)
    else:
        outcome = join.on_shadow(
            slots, ANSWER, event.encode(), shadow_id=event, now=now, partition=0
        )
    outcome.store(slots, ANSWER)
    return outcome


def run(events: list[str], ttl: float = TTL) -> tuple[list[JoinOutcome], dict[str, Slot]]:
    """Feed events one second apart; return the outcomes and the slots."""
    join, slots = Join(ttl_s=ttl), {}
    return [arrive(join, slots, event, float(i)) for i, event in enumerate(events)], slots


def emitted(outcomes: list[JoinOutcome]) -> list[tuple[bytes, bytes]]:
    return [(pair.prediction, pair.feedback) for o in outcomes for pair in o.pairs]


def test_every_interleaving_with_redeliveries_emits_each_prediction_once_with_the_label() -> None:
    events = ["prediction", "prediction", "feedback", "feedback", "p~v2", "p~v2", "p~v3"]
    for order in set(itertools.permutations(events)):
        outcomes, slots = run(list(order))
        assert sorted(emitted(outcomes)) == sorted(
            [(b"prediction", b"feedback"), (b"p~v2", b"feedback"), (b"p~v3", b"feedback")]
        ), order
        assert slots[ANSWER].state is SlotState.JOINED
        assert slots[ANSWER].label == b"feedback" and slots[ANSWER].shadows == ()
        assert sorted(slots[ANSWER].joined_shadows) == ["p~v2", "p~v3"]


def test_a_shadow_before_its_answer_opens_the_slot_and_waits_for_both() -> None:
    outcomes, slots = run(["p~v2"])
    assert outcomes[0].kind is JoinOutcomeKind.WAITING and outcomes[0].pairs == ()
    assert slots[ANSWER].state is SlotState.AWAITING_BOTH
    assert slots[ANSWER].expires_at == TTL
    outcomes, slots = run(["p~v2", "prediction", "feedback"])
    assert [o.kind for o in outcomes] == [JoinOutcomeKind.WAITING] * 2 + [JoinOutcomeKind.JOINED]
    assert emitted(outcomes) == [(b"prediction", b"feedback"), (b"p~v2", b"feedback")]


def test_a_shadow_between_its_answer_and_the_label_waits_in_the_answers_slot() -> None:
    outcomes, slots = run(["prediction", "p~v2"])
    assert outcomes[1].kind is JoinOutcomeKind.WAITING
    assert slots[ANSWER].state is SlotState.AWAITING_FEEDBACK
    assert slots[ANSWER].payload == b"prediction"
    assert [s.payload for s in slots[ANSWER].shadows] == [b"p~v2"]
    assert slots[ANSWER].expires_at == TTL  # from the prediction: the shadow does not extend it


def test_a_label_before_its_answer_joins_the_waiting_shadows_and_waits_for_the_answer() -> None:
    outcomes, slots = run(["p~v2", "feedback"])
    assert outcomes[1].kind is JoinOutcomeKind.WAITING  # the feedback still waits for its answer
    assert emitted(outcomes) == [(b"p~v2", b"feedback")]
    assert slots[ANSWER].state is SlotState.AWAITING_PREDICTION
    assert slots[ANSWER].joined_shadows == ("p~v2",) and slots[ANSWER].shadows == ()
    assert slots[ANSWER].expires_at == 1.0 + TTL


def test_a_shadow_after_the_join_joins_the_kept_label_once() -> None:
    outcomes, slots = run(["prediction", "feedback", "p~v2", "p~v2"])
    assert [o.kind for o in outcomes[2:]] == [JoinOutcomeKind.JOINED, JoinOutcomeKind.DUPLICATE]
    assert outcomes[2].prediction == b"" and outcomes[2].feedback == b""  # no second answer
    assert emitted(outcomes[2:]) == [(b"p~v2", b"feedback")]
    assert slots[ANSWER].expires_at == 1.0 + TTL  # the join's TTL, not extended


def test_a_joined_slot_keeps_the_label_but_no_waiting_payload_or_trace() -> None:
    join, slots = Join(ttl_s=TTL), {}
    trace = (("traceparent", b"f"),)
    join.on_prediction(slots, ANSWER, b"x", now=0.0, partition=0).store(slots, ANSWER)
    join.on_feedback(slots, ANSWER, b"f", now=1.0, partition=0, trace=trace).store(slots, ANSWER)
    joined = slots[ANSWER]
    assert (joined.payload, joined.trace) == (b"", ())
    assert (joined.label, joined.label_trace) == (b"f", trace)


def test_several_shadows_of_one_answer_each_join_once() -> None:
    shadows = [f"p~v{v}" for v in range(2, 6)]
    outcomes, slots = run(["prediction", *shadows[:2], "feedback", *shadows[2:]])
    assert sorted(emitted(outcomes)) == sorted(
        [(b"prediction", b"feedback"), *[(s.encode(), b"feedback") for s in shadows]]
    )
    assert slots[ANSWER].joined_shadows == tuple(shadows)


@pytest.mark.parametrize(
    "before", [[], ["prediction"], ["feedback"], ["prediction", "feedback"]], ids=str
)
def test_a_redelivered_shadow_is_a_duplicate_and_changes_nothing(before: list[str]) -> None:
    join, slots = Join(ttl_s=TTL), {}
    for i, event in enumerate([*before, "p~v2"]):
        arrive(join, slots, event, float(i))
    stored = dict(slots)
    again = join.on_shadow(slots, ANSWER, b"p~v2", shadow_id="p~v2", now=9.0, partition=0)
    assert again.kind is JoinOutcomeKind.DUPLICATE and again.slot is None and again.pairs == ()
    assert slots == stored


def test_a_shadow_whose_answer_is_never_labelled_expires_with_the_slot() -> None:
    join, slots = Join(ttl_s=TTL), {}
    arrive(join, slots, "p~v2", 0.0)
    arrive(join, slots, "prediction", 5.0)  # the prediction sets the slot's life: 5 + TTL
    arrive(join, slots, "p~v3", 6.0)
    assert list(expired(slots, now=5.0 + TTL - 0.001)) == []
    assert list(expired(slots, now=5.0 + TTL)) == [ANSWER]
    late = join.on_feedback(slots, ANSWER, b"feedback", now=5.0 + TTL, partition=0)
    assert late.kind is JoinOutcomeKind.WAITING and late.pairs == ()
    assert (late.replaced_expired, late.replaced_shadows) == (SlotState.AWAITING_FEEDBACK, 2)


def test_a_shadow_after_the_joined_slot_expired_waits_afresh() -> None:
    join, slots = Join(ttl_s=TTL), {}
    arrive(join, slots, "prediction", 0.0)
    arrive(join, slots, "feedback", 1.0)
    late = arrive(join, slots, "p~v2", 1.0 + TTL)
    assert late.kind is JoinOutcomeKind.WAITING and late.pairs == ()
    assert (late.replaced_expired, late.replaced_shadows) == (SlotState.JOINED, 0)
    assert slots[ANSWER].state is SlotState.AWAITING_BOTH


def test_the_sweep_lists_slots_with_waiting_shadows_once_expired() -> None:
    join, slots = Join(ttl_s=TTL), {}
    join.on_shadow(slots, "a", b"s", shadow_id="a~v2", now=0.0, partition=1).store(slots, "a")
    join.on_prediction(slots, "b", b"x", now=10.0, partition=2).store(slots, "b")
    join.on_shadow(slots, "b", b"s", shadow_id="b~v2", now=11.0, partition=2).store(slots, "b")
    assert list(expired(slots, now=TTL)) == ["a"]
    assert sorted(expired(slots, now=10.0 + TTL)) == ["a", "b"]
    assert (slots["a"].partition, slots["b"].partition) == (1, 2)


def test_a_shadow_joins_with_its_own_trace_and_the_labels() -> None:
    join, slots = Join(ttl_s=TTL), {}
    shadow_trace, label_trace = (("traceparent", b"s"),), (("traceparent", b"f"),)
    join.on_shadow(
        slots, ANSWER, b"s2", shadow_id="p~v2", now=0.0, partition=0, trace=shadow_trace
    ).store(slots, ANSWER)
    labelled = join.on_feedback(slots, ANSWER, b"f", now=1.0, partition=0, trace=label_trace)
    labelled.store(slots, ANSWER)
    late = join.on_shadow(slots, ANSWER, b"s3", shadow_id="p~v3", now=2.0, partition=0)
    late.store(slots, ANSWER)
    join.on_prediction(slots, ANSWER, b"x", now=3.0, partition=0).store(slots, ANSWER)
    very_late = join.on_shadow(slots, ANSWER, b"s4", shadow_id="p~v4", now=4.0, partition=0)
    traces = [
        (pair.prediction_trace, pair.feedback_trace)
        for outcome in (labelled, late, very_late)
        for pair in outcome.pairs
    ]
    assert traces == [(shadow_trace, label_trace), ((), label_trace), ((), label_trace)]


def test_a_joined_slot_written_before_shadows_joined_misses_a_late_shadow() -> None:
    slots = {ANSWER: Slot(SlotState.JOINED, 100.0, 0)}  # an older trainer's slot: no label kept
    outcome = Join(ttl_s=TTL).on_shadow(slots, ANSWER, b"s", shadow_id="p~v2", now=1.0, partition=0)
    assert outcome.kind is JoinOutcomeKind.MISSED
    assert outcome.slot is None and outcome.pairs == ()


def test_an_answer_holds_a_bounded_number_of_shadows() -> None:
    join, slots = Join(ttl_s=TTL), {}
    for version in range(MAX_SHADOWS_PER_ANSWER):
        arrive(join, slots, f"p~v{version}", float(version))
    with pytest.raises(InvalidInput, match="one too many"):
        join.on_shadow(slots, ANSWER, b"s", shadow_id="p~v99", now=20.0, partition=0)
    arrive(join, slots, "feedback", 21.0)
    with pytest.raises(InvalidInput, match="one too many"):  # joined shadows count too
        join.on_shadow(slots, ANSWER, b"s", shadow_id="p~v99", now=22.0, partition=0)
    assert arrive(join, slots, "p~v0", 23.0).kind is JoinOutcomeKind.DUPLICATE
