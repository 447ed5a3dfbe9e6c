"""ModelUpdate signing: one signature over everything a receiver acts on.

A learner's ModelUpdate (topic ``model-updates``) carries its model name, base
version, sequence, state digest, offsets, counts, timestamps and progress. One
HMAC-SHA256 under the artifact signing key covers all of them: the learner
signs with :func:`sign_update`, and a receiver (a gateway in live mode, a
trainer restoring a learner) calls :func:`verify_update` before it uses any
field; a record that does not verify is dead-lettered, never used in part.

What is signed (:func:`signed_content`) is the update's deterministic protobuf
serialization with ``state`` and ``signature`` cleared; the state is bound to
it by its digest ``sha256``, which is one of the signed fields. Why this shape:

* The receiver signs again what it parsed, so what verifies is exactly what it
  acts on: two encodings that parse into the same message verify alike, and
  any change to any field (or a field added or dropped) does not. It fails
  closed: a serializer that wrote the same message differently would get an
  update refused, never an unsigned one accepted.
* Every field is covered, including the ones a later schema adds, without a
  list of signed fields to keep in step with the schema. (An explicit signed
  submessage would need a choice, for each new field, of which side it goes
  on, and every reader of the flat fields rewritten.)
* The state is covered through its digest instead of being fed to the HMAC:
  the signed bytes stay small (the bookkeeping, a few kilobytes), the state is
  hashed once, and it stays content-addressed like a registry artifact.

Deterministic serialization is stable for one schema and one protobuf runtime,
which every headwater service shares; it is not a canonical form across
languages, so a foreign producer must sign with this module's rule.

Each learner (one per deployed version) writes its updates under the record
key :func:`update_key` ``"{model}/{base_version}"``, so compaction keeps the
latest update of every learner. The key is not signed: a receiver takes the
learner's identity from the signed fields, and checks the key against them
(:func:`check_update_key`) only so that a misrouted record cannot make
compaction drop another learner's update.

>>> from river import linear_model
>>> codec = ArtifactCodec("key")
>>> artifact = codec.encode(linear_model.LinearRegression())
>>> update = events_pb2.ModelUpdate(
...     model="m", base_version=1, sequence=2, state=artifact.content,
...     sha256=artifact.sha256, progress=events_pb2.LearnerProgress())
>>> verify_update(codec, sign_update(codec, update))
>>> update.sequence = 3
>>> verify_update(codec, update)
Traceback (most recent call last):
...
headwater.shared.errors.ArtifactIntegrityError: ModelUpdate for 'm' (sequence 3) does not verify: \
artifact signature does not verify: wrong signing key or tampered content
"""

from __future__ import annotations

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import ArtifactIntegrityError
from headwater.shared.pb import events_pb2


def update_key(model: str, base_version: int) -> str:
    """The ``model-updates`` record key of a learner's updates.

    >>> update_key("churn", 3)
    'churn/3'
    """
    return f"{model}/{base_version}"


def check_update_key(key: bytes | None, update: events_pb2.ModelUpdate) -> None:
    """Check a (verified) update's record key against its signed model and base version.

    The model name alone, the key of the one learner per model before each
    deployed version had its own, is accepted too, so older updates still restore.

    >>> signed = events_pb2.ModelUpdate(model="churn", base_version=3)
    >>> check_update_key(b"churn/3", signed); check_update_key(b"churn", signed)
    >>> check_update_key(b"churn/2", signed)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.ArtifactIntegrityError: ModelUpdate for 'churn' version 3 is \
keyed 'churn/2', not 'churn/3'

    Raises:
        ArtifactIntegrityError: The key names another learner.

    """
    expected = update_key(update.model, update.base_version)
    found = (key or b"").decode("utf-8", errors="replace")
    if found not in (expected, update.model):
        raise ArtifactIntegrityError(
            f"ModelUpdate for {update.model!r} version {update.base_version} is keyed "
            f"{found!r}, not {expected!r}"
        )


def signed_content(update: events_pb2.ModelUpdate) -> bytes:
    """The bytes the signature of ``update`` covers: all of it but ``state`` and ``signature``.

    >>> signed = events_pb2.ModelUpdate(model="m", state=b"state", signature="ab12")
    >>> signed_content(signed) == events_pb2.ModelUpdate(model="m").SerializeToString()
    True
    """
    unsigned = events_pb2.ModelUpdate()
    unsigned.CopyFrom(update)
    unsigned.ClearField("state")
    unsigned.ClearField("signature")
    return unsigned.SerializeToString(deterministic=True)


def sign_update(codec: ArtifactCodec, update: events_pb2.ModelUpdate) -> events_pb2.ModelUpdate:
    """Set the signature of ``update`` (every other field final, ``sha256`` that of the state).

    Returns:
        ``update`` itself, now signed.

    """
    update.signature = codec.sign(signed_content(update))
    return update


def verify_update(codec: ArtifactCodec, update: events_pb2.ModelUpdate) -> None:
    """Check that ``update`` is whole and as its learner signed it, in constant time.

    Checks, in order: the progress is embedded (an older trainer's update, with
    its progress in a record header, is refused), the signature covers every
    field, and the state's size and digest match ``sha256``.

    Raises:
        ArtifactIntegrityError: The update does not verify; the message says why.

    """
    about = f"ModelUpdate for {update.model!r} (sequence {update.sequence})"
    if not update.HasField("progress"):
        raise ArtifactIntegrityError(
            f"{about} has no embedded progress: an older trainer's format "
            "(progress in a record header, signed apart), no longer accepted"
        )
    try:
        codec.verify(signed_content(update), update.signature)
        codec.verify_digest(update.state, update.sha256)
    except ArtifactIntegrityError as error:
        raise ArtifactIntegrityError(f"{about} does not verify: {error}") from None
