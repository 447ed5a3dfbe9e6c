"""Shadow predictions off the request path: a bounded queue and one background worker.

A request whose routing key draws shadow routes is handed to a
:class:`ShadowQueue` after its answer is built and its events are buffered; the
worker runs the shadow predictions in later turns of the event loop, one
request at a time, so they never delay or change an answer. The queue is
bounded: when it is full the mirror is dropped (never the answer), counted in
``headwater_gateway_shadow_dropped_total{reason="queue_full"}`` and logged at
most every few seconds. Mirrors still queued when the gateway stops are
counted with ``reason="stopping"``.

>>> import asyncio
>>> async def demo():
...     ran = []
...     queue = ShadowQueue(max_requests=1, run=ran.append)
...     accepted = [queue.offer(job, model="m") for job in ("a", "b")]
...     await queue.join()
...     await queue.close()
...     return accepted, ran, queue.dropped
>>> asyncio.run(demo())
([True, False], ['a'], 1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from headwater.services.gateway import metrics

log = logging.getLogger(__name__)

Job = TypeVar("Job")
_DROP_LOG_INTERVAL_S = 5.0


class ShadowQueue(Generic[Job]):
    """Runs ``run(job)`` for each offered job in a background task, at most ``max_requests`` queued.

    Args:
        max_requests: How many requests may wait for their shadow predictions.
        run: Predicts and publishes one request's shadows; an exception is
            logged and the worker goes on.

    Attributes:
        dropped: Requests not mirrored (queue full, or left when it closed).

    """

    def __init__(self, max_requests: int, run: Callable[[Job], None]) -> None:
        self.run = run
        self.dropped = 0
        self._queue: asyncio.Queue[tuple[str, Job]] = asyncio.Queue(maxsize=max_requests)
        self._worker: asyncio.Task[None] | None = None
        self._last_drop_log = 0.0

    def offer(self, job: Job, model: str) -> bool:
        """Queue one request's mirror without waiting; False (counted) when the queue is full."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name="gateway-shadows"
            )
        try:
            self._queue.put_nowait((model, job))
        except asyncio.QueueFull:
            self._drop(model, "queue_full")
            return False
        return True

    async def join(self) -> None:
        """Wait until every queued mirror has run (for tests and a drained stop)."""
        await self._queue.join()

    async def close(self) -> None:
        """Stop the worker; mirrors still queued are dropped and counted."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            model, _ = self._queue.get_nowait()
            self._queue.task_done()
            self._drop(model, "stopping")

    async def _work(self) -> None:
        while True:
            model, job = await self._queue.get()
            try:
                await asyncio.sleep(0)  # let the answer's turn (sending it) go first
            except asyncio.CancelledError:
                self._queue.task_done()
                self._drop(model, "stopping")
                raise
            try:
                self.run(job)
            except Exception:  # a shadow must never stop the others
                log.exception("shadow prediction failed", extra={"model": model})
            finally:
                self._queue.task_done()

    def _drop(self, model: str, reason: str) -> None:
        self.dropped += 1
        metrics.SHADOW_DROPPED.labels(model=model, reason=reason).inc()
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning(
                "shadow predictions dropped",
                extra={"model": model, "reason": reason, "dropped_total": self.dropped},
            )


def shadow_prediction_id(answered_id: str, version: int) -> str:
    """The prediction id of a shadow's copy of an answered row.

    >>> shadow_prediction_id("9f2c", 3)
    '9f2c~v3'
    """
    return f"{answered_id}~v{version}"
