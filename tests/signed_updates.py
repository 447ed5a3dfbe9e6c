"""Signed ModelUpdates as a learner writes them, and the forgeries every receiver must refuse.

A forgery is a genuine, signed update with one field changed after signing and
its signature kept: replayed under another model name, with a raised
sequence, or with altered offsets.
"""

from __future__ import annotations

from typing import Any

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.model_updates import sign_update
from headwater.shared.pb import events_pb2, registry_pb2

EXAMPLES_TOPIC = "hw.examples"


def signed_update(
    codec: ArtifactCodec,
    estimator: Any,
    model: str = "m",
    base_version: int = 1,
    sequence: int = 1,
) -> events_pb2.ModelUpdate:
    """A signed update of ``estimator``'s state that learned offsets 0..9 of one partition."""
    artifact = codec.encode(estimator)
    update = events_pb2.ModelUpdate(
        model=model,
        base_version=base_version,
        sequence=sequence,
        state=artifact.content,
        sha256=artifact.sha256,
        offsets=[
            registry_pb2.OffsetRange(
                topic=EXAMPLES_TOPIC, partition=0, first_offset=0, last_offset=9
            )
        ],
        examples_learned=10,
        progress=events_pb2.LearnerProgress(
            positions=[events_pb2.ConsumedPosition(topic=EXAMPLES_TOPIC, partition=0, offset=9)]
        ),
    )
    return sign_update(codec, update)


def _copy(update: events_pb2.ModelUpdate) -> events_pb2.ModelUpdate:
    forged = events_pb2.ModelUpdate()
    forged.CopyFrom(update)
    return forged


def replayed_as(update: events_pb2.ModelUpdate, model: str) -> events_pb2.ModelUpdate:
    """``update`` replayed under another model name, its signature kept."""
    forged = _copy(update)
    forged.model = model
    return forged


def with_sequence(update: events_pb2.ModelUpdate, sequence: int) -> events_pb2.ModelUpdate:
    """``update`` with another (raised) sequence, its signature kept."""
    forged = _copy(update)
    forged.sequence = sequence
    return forged


def with_offsets_altered(update: events_pb2.ModelUpdate) -> events_pb2.ModelUpdate:
    """``update`` claiming to have learned fewer offsets, its signature kept."""
    forged = _copy(update)
    forged.offsets[0].last_offset -= 5
    return forged


def forgeries(
    update: events_pb2.ModelUpdate, other_model: str
) -> list[tuple[str, events_pb2.ModelUpdate]]:
    """The three forgeries of ``update``, named, the highest sequence first."""
    return [
        ("a raised sequence", with_sequence(update, update.sequence + 1_000)),
        ("replayed under another model name", replayed_as(update, other_model)),
        ("altered offsets", with_offsets_altered(update)),
    ]
