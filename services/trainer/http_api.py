"""The trainer's HTTP endpoints (aiohttp, on :func:`~headwater.shared.http.service_app`).

- ``GET /health``: 200 ``{"status": "serving"}`` once the join and the learners
  consume, 503 ``{"status": "starting"}`` before.
- ``GET /metrics``: Prometheus text exposition.
- ``GET /v1/models``: this trainer's learners, one per routed version of each
  model (version, role, counts, progressive-validation metrics, offsets).
- ``POST /v1/models/{name}/checkpoint[?version=N]``: register a checkpoint
  version of a learner now (the primary route's without ``version``); 201 with
  the version, 400 for a ``version`` that is not a number, 404 when this trainer
  has no such learner, 503 when the registry refused or was unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from headwater.services.trainer.learn.pool import LearnerPool, RoutedLearner
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.http import service_app
from headwater.shared.pb import registry_pb2


def learner_to_json(routed: RoutedLearner) -> dict[str, Any]:
    """One learner as JSON."""
    active = routed.active
    learner = active.learner
    return {
        "model": routed.learner_id.model,
        "version": routed.learner_id.version,
        "role": routed.role,
        "base_version": learner.base_version,
        "examples_learned": learner.examples_learned,
        "metrics": learner.metrics(),
        "sequence": active.sequence,
        "offsets": [
            {"topic": s.topic, "partition": s.partition, "first": s.first, "last": s.last}
            for s in learner.offsets()
        ],
        "checkpoint_error": active.checkpoint_error or None,
    }


def version_to_json(version: registry_pb2.ModelVersion) -> dict[str, Any]:
    """A checkpoint version and its lineage as JSON."""
    lineage = version.lineage
    return {
        "model": version.model,
        "version": version.version,
        "parent_version": lineage.parent_version,
        "example_count": lineage.example_count,
        "metrics": dict(lineage.metrics),
        "offsets": [
            {
                "topic": r.topic,
                "partition": r.partition,
                "first": r.first_offset,
                "last": r.last_offset,
            }
            for r in lineage.offsets
        ],
    }


def version_param(value: str | None) -> int | None:
    """The ``version`` query parameter: a version number, or None when absent.

    >>> version_param("3"), version_param(None)
    (3, None)
    >>> version_param("latest")
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: version must be a version number, got 'latest'

    Raises:
        InvalidInput: Not a positive integer.

    """
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise InvalidInput(f"version must be a version number, got {value!r}")
    return int(value)


def build_web_app(
    pool: Callable[[], LearnerPool | None], ready: Callable[[], bool], deadline_s: float
) -> web.Application:
    """The aiohttp application of the trainer.

    Args:
        pool: Returns the learners (None before start).
        ready: Whether the join and the learners consume (for ``/health``).
        deadline_s: Longest a checkpoint request waits for the registry.

    """

    async def models(_: web.Request) -> web.Response:
        learners = pool()
        items = learners.learners() if learners else []
        return web.json_response({"learners": [learner_to_json(r) for r in items]})

    async def checkpoint(request: web.Request) -> web.Response:
        learners, name = pool(), request.match_info["name"]
        version = version_param(request.query.get("version"))
        if learners is None:
            raise Unavailable("the trainer is starting")
        task = learners.start_checkpoint(name, version)  # ModelNotFound: 404
        try:
            created = await asyncio.wait_for(asyncio.shield(task), timeout=deadline_s + 1)
        except TimeoutError:
            raise Unavailable("the registry did not answer in time") from None
        if created is None:
            active = learners.find(name, version)
            error = active.checkpoint_error if active is not None else ""
            raise Unavailable(error or "checkpoint failed")
        return web.json_response(version_to_json(created), status=201)

    app = service_app(ready)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/models/{name}/checkpoint", checkpoint)
    return app
