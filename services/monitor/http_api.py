"""The monitor's HTTP endpoints (aiohttp): ``/metrics``, ``/v1/models``, ``/health``.

- ``GET /metrics``: Prometheus text exposition (monitor metrics, then bus and process ones).
- ``GET /v1/models``: every model's versions with the same numbers, as JSON.
- ``GET /v1/models/{name}``: one model; 404 with ``{"error": ...}`` when unseen.
- ``GET /health``: 200 ``{"status": "serving"}`` once the streams consume,
  503 ``{"status": "starting"}`` before.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from headwater.services.monitor.convert import model_to_json, snapshot_to_json
from headwater.services.monitor.domain import MonitorSnapshot
from headwater.services.monitor.exporter import render_metrics
from headwater.shared.errors import ModelNotFound


def build_web_app(
    snapshot: Callable[[], MonitorSnapshot],
    registry: CollectorRegistry,
    ready: Callable[[], bool],
) -> web.Application:
    """The aiohttp application of the monitor.

    Args:
        snapshot: Returns the monitor's state now.
        registry: Holds the monitor's Prometheus collector.
        ready: Whether the streams are consuming (for ``/health``).

    """

    async def metrics(_: web.Request) -> web.Response:
        body = render_metrics(registry, include_process=True)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def models(_: web.Request) -> web.Response:
        return web.json_response(snapshot_to_json(snapshot()))

    async def model(request: web.Request) -> web.Response:
        try:
            return web.json_response(model_to_json(snapshot(), request.match_info["name"]))
        except ModelNotFound as err:
            return web.json_response({"error": str(err)}, status=404)

    async def health(_: web.Request) -> web.Response:
        serving = ready()
        return web.json_response(
            {"status": "serving" if serving else "starting"}, status=200 if serving else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name}", model)
    app.router.add_get("/health", health)
    return app
