"""One signature over a ModelUpdate: every field a receiver acts on is covered."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from google.protobuf import json_format
from river import linear_model

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import ArtifactIntegrityError
from headwater.shared.model_updates import signed_content, verify_update
from headwater.shared.pb import events_pb2
from tests.signed_updates import forgeries, signed_update

CODEC = ArtifactCodec("unit-test-key")
Update = events_pb2.ModelUpdate
NOT_SIGNED = "artifact signature does not verify: wrong signing key or tampered content"


def genuine() -> Update:
    return signed_update(CODEC, linear_model.LogisticRegression(), sequence=7)


def test_a_signed_update_verifies_as_sent_and_as_parsed_from_binary_or_json() -> None:
    update = genuine()
    verify_update(CODEC, update)
    verify_update(CODEC, Update.FromString(update.SerializeToString()))
    verify_update(CODEC, json_format.Parse(json_format.MessageToJson(update), Update()))


@pytest.mark.parametrize("forgery", [name for name, _ in forgeries(genuine(), "other")])
def test_a_forged_update_is_refused(forgery: str) -> None:
    forged = dict(forgeries(genuine(), other_model="other"))[forgery]
    about = f"ModelUpdate for {forged.model!r} (sequence {forged.sequence})"
    with pytest.raises(ArtifactIntegrityError) as refused:
        verify_update(CODEC, forged)
    assert str(refused.value) == f"{about} does not verify: {NOT_SIGNED}"


def _set(field: str, value: object) -> Callable[[Update], None]:
    return lambda u: setattr(u, field, value)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_set("base_version", 2), id="base version"),
        pytest.param(_set("examples_learned", 11), id="count"),
        pytest.param(lambda u: setattr(u.progress, "duplicates", 3), id="progress count"),
        pytest.param(lambda u: u.progress.recent_ids.append(b"12345678"), id="dedupe ids"),
        pytest.param(lambda u: setattr(u.progress.positions[0], "offset", 99), id="positions"),
        pytest.param(lambda u: u.offsets.add(topic="hw.examples", partition=1), id="offsets added"),
        pytest.param(lambda u: u.published_at.FromSeconds(5), id="published at"),
        pytest.param(_set("sha256", "f" * 64), id="state digest"),
        pytest.param(_set("signature", "0" * 64), id="signature"),
    ],
)
def test_every_field_is_covered(tamper: Callable[[Update], None]) -> None:
    update = genuine()
    tamper(update)
    with pytest.raises(ArtifactIntegrityError, match=NOT_SIGNED):
        verify_update(CODEC, update)


def test_the_state_is_bound_by_its_digest_not_fed_to_the_hmac() -> None:
    update = genuine()
    other = signed_update(CODEC, linear_model.LinearRegression(), sequence=7)
    assert update.state not in signed_content(update)
    assert signed_content(update) != signed_content(other)  # the digests differ
    update.state = other.state  # another model's state under this update's signature
    with pytest.raises(ArtifactIntegrityError, match="does not verify: artifact sha256 mismatch"):
        verify_update(CODEC, update)


def test_an_update_signed_with_another_key_is_refused() -> None:
    update = signed_update(ArtifactCodec("someone-else"), linear_model.LogisticRegression())
    with pytest.raises(ArtifactIntegrityError, match=NOT_SIGNED):
        verify_update(CODEC, update)


def test_an_older_trainers_update_is_refused_with_a_clear_reason() -> None:
    artifact = CODEC.encode(linear_model.LogisticRegression())
    old = Update(  # its state signed alone; its progress travelled in a record header
        model="m", base_version=1, sequence=3, state=artifact.content,
        sha256=artifact.sha256, signature=artifact.signature,
    )  # fmt: skip
    with pytest.raises(ArtifactIntegrityError) as refused:
        verify_update(CODEC, old)
    assert str(refused.value) == (
        "ModelUpdate for 'm' (sequence 3) has no embedded progress: an older trainer's "
        "format (progress in a record header, signed apart), no longer accepted"
    )


def test_an_oversize_state_is_refused() -> None:
    update = genuine()
    limit = len(update.state) - 1
    assert len(signed_content(update)) < limit
    with pytest.raises(ArtifactIntegrityError, match=f"artifact is {limit + 1} bytes, over the"):
        verify_update(ArtifactCodec("unit-test-key", max_bytes=limit), update)
