"""The HTTP side of the trainer and the monitor: routes, errors, server, work directory.

Both serve a few aiohttp routes next to their Faust app: :func:`service_app`
gives each the same ``/health`` and ``/metrics`` and turns the errors their
own routes raise into statuses; :class:`HttpEndpoint` serves it; each also
gives Faust a working directory that is theirs alone (:class:`WorkDir`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from headwater.shared.grpc_errors import caller_status, status_for

log = logging.getLogger(__name__)

#: The HTTP status of each gRPC status a headwater error maps to: the table of
#: grpc-gateway and google.rpc.Code, so the error → status map stays one
#: (:mod:`headwater.shared.grpc_errors`) whichever protocol answers.
HTTP_STATUS: Mapping[grpc.StatusCode, int] = MappingProxyType({
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_status_for(error: BaseException) -> int:
    """The HTTP status of an error: the one of its gRPC status.

    >>> from headwater.shared import errors
    >>> http_status_for(errors.ModelNotFound("no model 'x'"))
    404
    >>> http_status_for(errors.Unavailable("the registry is down"))
    503
    >>> http_status_for(ValueError("boom"))
    500
    """
    return HTTP_STATUS[status_for(error)]


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:  # aiohttp's own answers (unknown route, wrong method)
        raise
    except Exception as error:  # the one place the routes' errors become statuses
        code, message = caller_status(error)
        return web.json_response({"error": message}, status=HTTP_STATUS[code])


def _process_metrics() -> bytes:
    return generate_latest(REGISTRY)


def service_app(
    ready: Callable[[], bool], metrics: Callable[[], bytes] = _process_metrics
) -> web.Application:
    """An aiohttp application with the routes every HTTP service shares.

    - ``GET /health``: 200 ``{"status": "serving"}`` once ``ready()``, 503
      ``{"status": "starting"}`` before.
    - ``GET /metrics``: ``metrics()`` as Prometheus text (the process-wide
      registry by default).

    A route the service adds may raise: the error becomes ``{"error": message}``
    with :func:`http_status_for`'s status; an internal one is logged with its
    trace id and shows only that.

    Args:
        ready: Whether the service does its work (consumer groups joined).
        metrics: Renders the Prometheus text exposition.

    """

    async def health(_: web.Request) -> web.Response:
        serving = ready()
        return web.json_response(
            {"status": "serving" if serving else "starting"}, status=200 if serving else 503
        )

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[_errors_as_json])
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    return app


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
