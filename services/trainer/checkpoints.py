"""Checkpoint versions registered at most once, even when the registry's answer is lost.

``CreateVersion`` is not idempotent: when a call times out (or the registry is
UNAVAILABLE) it may still have committed. Each checkpoint therefore carries a
tag naming it (:data:`CHECKPOINT_TAG`: model, base version and the count of
examples learned since it, which together name one learner state); before
trying again the trainer lists the model's versions and adopts the one with
that tag instead of registering a second copy.

>>> checkpoint_id("churn", 3, 500)
'churn/3/500'
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from dataclasses import dataclass
from typing import Any

from headwater.shared.artifacts import PICKLE_PROTOCOL, ArtifactCodec
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)

#: Version tag naming the learner state a checkpoint holds.
CHECKPOINT_TAG = "headwater.checkpoint-id"
#: Attempts at registering one checkpoint before giving up until the next one.
ATTEMPTS = 3


def checkpoint_id(model: str, base_version: int, examples_learned: int) -> str:
    """The tag value of a checkpoint: the state after ``examples_learned`` on ``base_version``."""
    return f"{model}/{base_version}/{examples_learned}"


@dataclass(frozen=True)
class CheckpointRequest:
    """What to register: the snapshot's artifact, spec, lineage and its checkpoint id."""

    model: str
    spec_json: str
    lineage: registry_pb2.Lineage
    content: bytes
    description: str
    checkpoint_id: str
    signature: str = ""


def pickled_state(codec: ArtifactCodec, model: Any) -> bytes:
    """The model's artifact content, pickled now (on the event loop, between two examples).

    Pickling is the consistency point of a checkpoint taken while learning goes
    on; signing the bytes can then happen in a worker thread.

    Raises:
        ResourceExhausted: The state is larger than the codec's ``max_bytes``.

    """
    content = pickle.dumps(model, protocol=PICKLE_PROTOCOL)
    if len(content) > codec.max_bytes:
        raise ResourceExhausted(
            f"encoded model is {len(content)} bytes, over the limit of {codec.max_bytes}"
        )
    return content


async def find_checkpoint(
    registry: RegistryClient, model: str, checkpoint: str
) -> registry_pb2.ModelVersion | None:
    """The model's version carrying checkpoint id ``checkpoint``, None when there is none.

    Raises:
        Unavailable: The registry did not answer.

    """
    for version in await registry.list_versions(model):
        if version.tags.get(CHECKPOINT_TAG) == checkpoint:
            return version
    return None


async def register(
    registry: RegistryClient, request: CheckpointRequest, retry_s: float
) -> registry_pb2.ModelVersion:
    """Create the checkpoint's version, or adopt the one an unanswered attempt committed.

    Raises:
        Unavailable: No attempt got an answer (the version may exist: look it
            up with :func:`find_checkpoint` before registering another).
        HeadwaterError: The registry refused the version.

    """
    tags = {"created_by": "trainer", CHECKPOINT_TAG: request.checkpoint_id}
    failure: Unavailable | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(retry_s)
            try:
                found = await find_checkpoint(registry, request.model, request.checkpoint_id)
            except Unavailable as err:
                failure = err
                continue
            if found is not None:
                log.info("checkpoint adopted", extra={"checkpoint": request.checkpoint_id})
                return found
        try:
            return await registry.create_version(
                request.model,
                request.spec_json,
                request.lineage,
                artifact=request.content,
                artifact_signature=request.signature,
                description=request.description,
                tags=tags,
            )
        except Unavailable as err:
            failure = err
    assert failure is not None
    raise failure
