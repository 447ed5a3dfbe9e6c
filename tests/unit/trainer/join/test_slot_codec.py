"""The slot codec across formats: slots already in a changelog decode, new fields round-trip."""

from __future__ import annotations

import struct

import pytest

from headwater.services.trainer.join.slot_codec import decode_slot, encode_slot
from headwater.services.trainer.join.slots import Slot, SlotState, WaitingShadow
from headwater.shared.errors import InvalidInput

TRACE = (("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)
SHADOWS = (
    WaitingShadow("p~v2", b"\x00shadow\xff", TRACE),
    WaitingShadow("p~v3", b"shadow 3"),
)


def test_a_traced_slot_written_before_shadows_still_decodes() -> None:
    name, value = b"traceparent", TRACE[0][1]
    trace = struct.pack(">BB", 1, len(name)) + name + struct.pack(">H", len(value)) + value
    old = struct.pack(">BdI", 2 | 0x80, 1_700_000_000.5, 3) + trace + b"feedback bytes"
    slot = decode_slot(old)
    assert slot == Slot(SlotState.AWAITING_PREDICTION, 1_700_000_000.5, 3, b"feedback bytes", TRACE)
    assert (slot.label, slot.shadows, slot.joined_shadows) == (b"", (), ())
    assert encode_slot(slot) == old  # and is written again in that format


def test_a_joined_slot_written_before_shadows_decodes_without_a_label() -> None:
    old = struct.pack(">BdI", 3, 1_700_000_000.5, 1)
    assert decode_slot(old) == Slot(SlotState.JOINED, 1_700_000_000.5, 1)
    assert encode_slot(decode_slot(old)) == old


@pytest.mark.parametrize("state", list(SlotState))
@pytest.mark.parametrize("trace", [(), TRACE], ids=["untraced", "traced"])
def test_a_slot_with_a_label_and_shadows_round_trips_flagged(state: SlotState, trace) -> None:
    slot = Slot(
        state,
        1_700_000_000.125,
        7,
        b"\x00payload\xff",
        trace,
        label=b"\x00label",
        label_trace=TRACE,
        shadows=SHADOWS,
        joined_shadows=("p~v4", "p~v5"),
    )
    encoded = encode_slot(slot)
    assert encoded[0] == state.value | 0x40 | (0x80 if trace else 0)
    assert decode_slot(encoded) == slot


@pytest.mark.parametrize(
    "fields",
    [
        {"label": b"f"},
        {"label_trace": TRACE},
        {"shadows": SHADOWS[1:]},
        {"joined_shadows": ("p~v2",)},
    ],
    ids=["label", "label trace", "waiting shadow", "joined shadow"],
)
def test_any_shadow_field_alone_round_trips(fields) -> None:
    slot = Slot(SlotState.JOINED, 5.0, 0, **fields)
    assert decode_slot(encode_slot(slot)) == slot


def test_the_shadowed_format_is_fixed() -> None:
    slot = Slot(
        SlotState.AWAITING_FEEDBACK,
        2.0,
        1,
        b"P",
        shadows=(WaitingShadow("s", b"S", (("t", b"v"),)),),
    )
    assert encode_slot(slot).hex(" ") == (
        "41 40 00 00 00 00 00 00 00 00 00 00 01"  # state 1 | shadowed, expiry 2.0, partition 1
        " 00 00 00 00 00"  # no label, no label trace
        " 01 00 01 73 01 01 74 00 01 76 00 00 00 01 53"  # shadow "s", trace t=v, payload S
        " 00"  # no joined shadows
        " 50"  # the payload
    )


def test_a_truncated_shadow_part_is_refused() -> None:
    encoded = encode_slot(Slot(SlotState.AWAITING_BOTH, 1.0, 0, shadows=SHADOWS))
    for cut in range(13, len(encoded)):
        with pytest.raises(InvalidInput, match="join slot shadows truncated"):
            decode_slot(encoded[:cut])


def test_an_unreadable_shadow_id_is_refused() -> None:
    encoded = encode_slot(Slot(SlotState.JOINED, 1.0, 0, joined_shadows=("ab",)))
    with pytest.raises(InvalidInput, match="join slot shadows unreadable"):
        decode_slot(encoded[:-2] + b"\xff\xfe")


def test_a_slot_with_too_many_shadows_is_not_encoded() -> None:
    many = tuple(f"p~v{v}" for v in range(256))
    with pytest.raises(InvalidInput, match="255"):
        encode_slot(Slot(SlotState.JOINED, 1.0, 0, joined_shadows=many))
