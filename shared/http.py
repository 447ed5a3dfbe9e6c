"""A small aiohttp endpoint (health, metrics, JSON) and a scratch work directory.

The trainer and the monitor each serve a few HTTP routes next to their Faust
app, and give Faust a working directory that is theirs alone.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


class HttpEndpoint:
    """An aiohttp application served on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application, host: str, port: int) -> int:
        """Serve ``app``; return the bound port."""
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self.port = next(
            (int(a[1]) for a in runner.addresses if isinstance(a, tuple) and len(a) >= 2), port
        )
        return self.port

    async def stop(self, timeout_s: float) -> None:
        """Close the server within ``timeout_s`` (else log it and move on)."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await runner.cleanup()
        except TimeoutError:
            log.error("HTTP server did not close within the grace", extra={"server": self.name})


class WorkDir:
    """The configured directory, or a fresh temporary one removed on :meth:`cleanup`."""

    def __init__(self, configured: Path | None, prefix: str) -> None:
        self._owned = configured is None
        self.path = Path(tempfile.mkdtemp(prefix=prefix)) if configured is None else configured
        self.path.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        """Remove the directory if it was a temporary one."""
        if self._owned:
            shutil.rmtree(self.path, ignore_errors=True)
