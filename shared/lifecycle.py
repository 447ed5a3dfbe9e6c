"""Running a service process: start, wait for SIGTERM or SIGINT, stop gracefully.

Every service's ``__main__`` is one call of :func:`run_service`. A signal is
honoured at any moment, start-up included: a service that is still starting
(joining a consumer group, loading models) is cancelled and stopped, so a
supervisor's SIGTERM never has to escalate to SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from headwater.shared.settings import ServiceSettings
from headwater.shared.telemetry import setup_telemetry

log = logging.getLogger(__name__)
T = TypeVar("T")
S = TypeVar("S", bound=ServiceSettings)

#: Extra time stop() gets beyond its grace before it is cancelled.
STOP_SLACK_S = 5.0


class Service(Protocol):
    """What every service's composition root offers."""

    async def start(self) -> None:
        """Open connections and start serving."""

    async def stop(self, grace_s: float) -> None:
        """Stop accepting work, finish in-flight work within ``grace_s``, close."""


def run_service(name: str, settings: S, build: Callable[[S], Service]) -> None:
    """Run one service process until SIGTERM or SIGINT (``python -m headwater.services.<name>``).

    Telemetry is set up first; the server is built inside the running loop
    (its gRPC channels bind to the loop they are created on), then served by
    :func:`serve_until_signalled` with the settings' ``shutdown_grace_s``.
    """
    setup_telemetry(name, settings.telemetry)
    asyncio.run(_build_and_serve(name, settings, build))


async def _build_and_serve(name: str, settings: S, build: Callable[[S], Service]) -> None:
    await serve_until_signalled(build(settings), settings.shutdown_grace_s, name)


async def serve_until_signalled(service: Service, grace_s: float, name: str) -> None:
    """Start ``service``, then stop it on the first SIGTERM or SIGINT (even mid-start).

    Raises:
        Exception: whatever ``service.start()`` raised, after the service was stopped.

    """
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    try:
        started, _ = await unless_stopped(service.start(), stop_requested)
        if started:
            log.info("service started", extra={"service_name": name})
            await stop_requested.wait()
    finally:
        log.info("service stopping", extra={"service_name": name, "grace_s": grace_s})
        try:
            await asyncio.wait_for(service.stop(grace_s), timeout=grace_s + STOP_SLACK_S)
        except TimeoutError:
            log.error("service did not stop in time", extra={"service_name": name})
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        log.info("service stopped", extra={"service_name": name})


async def unless_stopped(
    work: Awaitable[T], stop_requested: asyncio.Event
) -> tuple[bool, T | None]:
    """Await ``work`` unless a stop is requested first (then ``work`` is cancelled).

    Returns:
        ``(True, result)`` when the work finished, ``(False, None)`` when stopped first.

    Raises:
        Exception: whatever ``work`` raised.

    """
    working = asyncio.ensure_future(work)
    waiting = asyncio.ensure_future(stop_requested.wait())
    await asyncio.wait({working, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if working.done():
        return True, working.result()
    working.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await working
    return False, None


async def bounded_step(step: Awaitable[object], timeout_s: float, what: str) -> bool:
    """Await one step of a stop for at most ``timeout_s``; False (logged) when cut short or failed.

    A failing step is logged and does not raise: the steps after it (closing the
    other connections) still run.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await step
        return True
    except TimeoutError:
        log.warning("stop step cut short", extra={"step": what, "timeout_s": round(timeout_s, 3)})
    except Exception as error:  # a failing close must not keep the rest open
        log.warning("stop step failed", extra={"step": what, "error": repr(error)})
    return False
