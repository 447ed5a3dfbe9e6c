"""The feedback join: every order of arrival, TTL expiry, duplicates."""

from __future__ import annotations

import itertools
import struct

import pytest

from headwater.services.trainer.join.pairing import Join, JoinOutcomeKind
from headwater.services.trainer.join.slot_codec import decode_slot, encode_slot
from headwater.services.trainer.join.slots import Slot, SlotState, expired
from headwater.shared.errors import InvalidInput

TTL = 30.0


def run(events: list[tuple[str, str, float]], ttl: float = TTL) -> tuple[list, dict[str, Slot]]:
    """Feed ("prediction"|"feedback", id, time) events; return outcomes and slots."""
    join, slots = Join(ttl_s=ttl), {}
    outcomes = []
    for side, key, now in events:
        handler = join.on_prediction if side == "prediction" else join.on_feedback
        payload = f"{side}:{key}".encode()
        outcome = handler(slots, key, payload, now=now, partition=0)
        outcome.store(slots, key)  # what the service does once it has emitted
        outcomes.append(outcome)
    return outcomes, slots


@pytest.mark.parametrize("first", ["prediction", "feedback"])
def test_pair_in_either_order_joins_once_with_both_payloads(first: str) -> None:
    second = "feedback" if first == "prediction" else "prediction"
    outcomes, slots = run([(first, "p", 0.0), (second, "p", 1.0)])
    assert [o.kind for o in outcomes] == [JoinOutcomeKind.WAITING, JoinOutcomeKind.JOINED]
    assert outcomes[1].prediction == b"prediction:p"
    assert outcomes[1].feedback == b"feedback:p"
    assert slots["p"].state is SlotState.JOINED
    assert slots["p"].payload == b""


def test_every_interleaving_of_duplicated_events_joins_exactly_once() -> None:
    sides = ["prediction", "prediction", "feedback", "feedback", "feedback"]
    for order in set(itertools.permutations(sides)):
        events = [(side, "p", float(i)) for i, side in enumerate(order)]
        outcomes, _ = run(events)
        kinds = [o.kind for o in outcomes]
        assert kinds.count(JoinOutcomeKind.JOINED) == 1, order
        assert kinds[0] is JoinOutcomeKind.WAITING
        assert kinds.count(JoinOutcomeKind.WAITING) == 1, order


def test_many_ids_join_independently() -> None:
    events = [("prediction", f"p{i}", float(i)) for i in range(10)]
    events += [("feedback", f"p{i}", 20.0 + i) for i in reversed(range(10))]
    outcomes, slots = run(events)
    joined = [o for o in outcomes if o.kind is JoinOutcomeKind.JOINED]
    assert sorted(o.prediction for o in joined) == sorted(
        f"prediction:p{i}".encode() for i in range(10)
    )
    assert all(o.feedback == o.prediction.replace(b"prediction", b"feedback") for o in joined)
    assert all(s.state is SlotState.JOINED for s in slots.values())


def test_prediction_waits_exactly_the_ttl() -> None:
    in_time, _ = run([("prediction", "p", 0.0), ("feedback", "p", TTL - 0.001)])
    assert in_time[1].kind is JoinOutcomeKind.JOINED
    too_late, slots = run([("prediction", "p", 0.0), ("feedback", "p", TTL)])
    assert too_late[1].kind is JoinOutcomeKind.WAITING
    assert too_late[1].replaced_expired is SlotState.AWAITING_FEEDBACK
    assert slots["p"].state is SlotState.AWAITING_PREDICTION
    assert slots["p"].expires_at == TTL + TTL


def test_feedback_first_waits_up_to_the_ttl() -> None:
    in_time, _ = run([("feedback", "p", 0.0), ("prediction", "p", TTL - 0.5)])
    assert in_time[1].kind is JoinOutcomeKind.JOINED
    too_late, _ = run([("feedback", "p", 0.0), ("prediction", "p", TTL + 0.5)])
    assert too_late[1].kind is JoinOutcomeKind.WAITING
    assert too_late[1].replaced_expired is SlotState.AWAITING_PREDICTION


def test_joined_id_remembered_for_the_ttl_then_forgotten() -> None:
    outcomes, _ = run(
        [
            ("prediction", "p", 0.0),
            ("feedback", "p", 10.0),
            ("feedback", "p", 10.0 + TTL - 1),  # duplicate within the TTL of the join
            ("prediction", "p", 10.0 + TTL + 1),  # after it: a new (late) arrival
        ]
    )
    kinds = [o.kind for o in outcomes]
    assert kinds == [
        JoinOutcomeKind.WAITING,
        JoinOutcomeKind.JOINED,
        JoinOutcomeKind.DUPLICATE,
        JoinOutcomeKind.WAITING,
    ]
    assert outcomes[3].replaced_expired is SlotState.JOINED


def test_first_of_duplicated_waiting_events_wins() -> None:
    join, slots = Join(ttl_s=TTL), {}
    join.on_feedback(slots, "p", b"first", now=0.0, partition=0).store(slots, "p")
    assert (
        join.on_feedback(slots, "p", b"second", now=1.0, partition=0).kind
        is JoinOutcomeKind.DUPLICATE
    )
    outcome = join.on_prediction(slots, "p", b"x", now=2.0, partition=0)
    assert outcome.feedback == b"first"
    outcome.store(slots, "p")
    # the duplicate did not extend the wait either
    assert slots["p"].expires_at == 2.0 + TTL


def test_sweep_lists_only_expired_slots_and_keeps_partitions() -> None:
    join, slots = Join(ttl_s=TTL), {}
    join.on_prediction(slots, "old", b"a", now=0.0, partition=2).store(slots, "old")
    join.on_feedback(slots, "new", b"b", now=20.0, partition=3).store(slots, "new")
    assert list(expired(slots, now=TTL)) == ["old"]
    assert slots["old"].partition == 2 and slots["new"].partition == 3
    assert sorted(expired(slots, now=20.0 + TTL)) == ["new", "old"]
    assert list(expired(slots, now=1.0)) == []


def test_ttl_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="ttl"):
        Join(ttl_s=0)


@pytest.mark.parametrize("state", list(SlotState))
def test_slot_encoding_round_trips(state: SlotState) -> None:
    slot = Slot(state, 1_700_000_000.125, 7, b"\x00payload\xff")
    assert decode_slot(encode_slot(slot)) == slot


def test_slot_decoding_rejects_garbage() -> None:
    with pytest.raises(InvalidInput, match="unknown state"):
        decode_slot(b"\x09" + b"\x00" * 12)


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_slots_written_before_trace_headers_still_decode() -> None:
    old = struct.pack(">BdI", 1, 1_700_000_000.5, 3) + b"prediction bytes"
    assert decode_slot(old) == Slot(
        SlotState.AWAITING_FEEDBACK, 1_700_000_000.5, 3, b"prediction bytes"
    )
    # a slot without a trace is still written in that format
    assert encode_slot(decode_slot(old)) == old


@pytest.mark.parametrize("state", list(SlotState))
def test_a_slot_with_trace_headers_round_trips(state: SlotState) -> None:
    trace = (("traceparent", TRACEPARENT), ("tracestate", b"vendor=x,other=\xff"))
    slot = Slot(state, 1_700_000_000.125, 7, b"\x00payload\xff", trace)
    encoded = encode_slot(slot)
    assert encoded[0] == state.value | 0x80  # flagged, so old readers refuse rather than misread
    assert decode_slot(encoded) == slot


def test_truncated_trace_headers_are_refused() -> None:
    encoded = encode_slot(
        Slot(SlotState.AWAITING_FEEDBACK, 1.0, 0, b"", (("traceparent", TRACEPARENT),))
    )
    for cut in (13, 14, 20, len(encoded) - 1):
        with pytest.raises(InvalidInput, match="trace headers"):
            decode_slot(encoded[:cut])


@pytest.mark.parametrize("first", ["prediction", "feedback"])
def test_a_joined_outcome_carries_the_trace_of_each_side(first: str) -> None:
    join, slots = Join(ttl_s=TTL), {}
    traces = {"prediction": (("traceparent", b"p"),), "feedback": (("traceparent", b"f"),)}
    second = "feedback" if first == "prediction" else "prediction"
    outcomes = []
    for now, side in enumerate([first, second]):
        handler = join.on_prediction if side == "prediction" else join.on_feedback
        outcome = handler(
            slots, "k", side.encode(), now=float(now), partition=0, trace=traces[side]
        )
        outcome.store(slots, "k")
        outcomes.append(outcome)
    joined = outcomes[1]
    assert joined.kind is JoinOutcomeKind.JOINED
    assert (joined.prediction, joined.feedback) == (b"prediction", b"feedback")
    assert joined.prediction_trace == traces["prediction"]
    assert joined.feedback_trace == traces["feedback"]
    assert slots["k"].trace == ()  # a joined slot keeps no trace


def test_the_join_only_reads_the_slots_until_the_outcome_is_stored() -> None:
    join, slots = Join(ttl_s=TTL), {}
    join.on_prediction(slots, "p", b"x", now=0.0, partition=0).store(slots, "p")
    before = dict(slots)
    outcome = join.on_feedback(slots, "p", b"f", now=1.0, partition=0)
    assert outcome.kind is JoinOutcomeKind.JOINED and slots == before  # emit first, then store
    assert outcome.slot is not None and outcome.slot.state is SlotState.JOINED
