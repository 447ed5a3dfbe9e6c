"""Running a service process: start, wait for SIGTERM or SIGINT, stop gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol

log = logging.getLogger(__name__)


class Service(Protocol):
    """What every service's composition root offers."""

    async def start(self) -> None:
        """Open connections and start serving."""

    async def stop(self, grace_s: float) -> None:
        """Stop accepting work, finish in-flight work within ``grace_s``, close."""


async def serve_until_signalled(service: Service, grace_s: float, name: str) -> None:
    """Start ``service``, then stop it on the first SIGTERM or SIGINT."""
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await service.start()
    log.info("service started", extra={"service_name": name})
    try:
        await stop_requested.wait()
    finally:
        log.info("service stopping", extra={"service_name": name, "grace_s": grace_s})
        await asyncio.wait_for(service.stop(grace_s), timeout=grace_s + 5)
        log.info("service stopped", extra={"service_name": name})
