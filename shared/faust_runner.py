"""Running a Faust app inside a service's own event loop.

The trainer and the monitor are services first (HTTP, producers, SIGTERM);
their Faust apps are parts of them, not workers run by the ``faust`` CLI. This
starts an app in the background (a group join takes seconds), reports when it
consumes, and stops it within a grace. The apps themselves come from
:func:`~headwater.shared.bus.faust_app.faust_app`.
"""

from __future__ import annotations

import asyncio
import logging

import faust

from headwater.shared.errors import Unavailable

log = logging.getLogger(__name__)


class FaustRunner:
    """One Faust app started in the background and stopped within a grace.

    Args:
        name: Names the app in task names, errors and logs (e.g. "the join").

    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.app: faust.App | None = None
        self._starting: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        """Whether the app has started: group joined, tables recovered, agents consuming."""
        task = self._starting
        return task is not None and task.done() and not task.cancelled() and not task.exception()

    def launch(self, app: faust.App) -> None:
        """Start ``app`` in the background (call inside the running event loop)."""
        self.app = app
        self._starting = asyncio.create_task(app.start(), name=f"{self.name}-faust-start")

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the app has started.

        Raises:
            Unavailable: It did not start within ``timeout_s``, or failed to start.

        """
        if self._starting is None:
            raise Unavailable(f"{self.name} was never started")
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self._starting)
        except TimeoutError:
            raise Unavailable(f"{self.name} is not ready after {timeout_s}s") from None
        except Exception as err:
            raise Unavailable(f"{self.name} failed to start: {err!r}") from err

    async def stop(self, grace_s: float) -> None:
        """Cancel a start in progress, then stop the app within ``grace_s`` (else log it)."""
        app, starting = self.app, self._starting
        self.app = self._starting = None
        if app is None:
            return
        if starting is not None and not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        try:
            async with asyncio.timeout(grace_s):
                await app.stop()
        except TimeoutError:
            log.error("faust app did not stop within the grace",
                      extra={"app": self.name, "grace_s": grace_s})
