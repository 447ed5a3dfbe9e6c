"""The monitor's HTTP endpoints (aiohttp, on :func:`~headwater.shared.http.service_app`).

- ``GET /metrics``: Prometheus text exposition (monitor metrics, then bus and process ones).
- ``GET /v1/models``: every model's versions with the same numbers, as JSON.
- ``GET /v1/models/{name}``: one model, with the rollout being judged and its latest
  evidence; 404 with ``{"error": ...}`` when unseen.
- ``GET /health``: 200 ``{"status": "serving"}`` once the streams consume,
  503 ``{"status": "starting"}`` before.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from headwater.services.monitor.convert import model_to_json, snapshot_to_json
from headwater.services.monitor.domain import MonitorSnapshot
from headwater.services.monitor.exporter import render_metrics
from headwater.services.monitor.rollout_controller import RolloutsSnapshot
from headwater.shared.http import service_app


def build_web_app(
    snapshot: Callable[[], MonitorSnapshot],
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    rollouts: Callable[[], RolloutsSnapshot | None] = lambda: None,
) -> web.Application:
    """The aiohttp application of the monitor.

    Args:
        snapshot: Returns the monitor's state now.
        registry: Holds the monitor's Prometheus collector.
        ready: Whether the streams are consuming (for ``/health``).
        rollouts: Returns the rollout controller's state now (None: no controller).

    """

    async def models(_: web.Request) -> web.Response:
        return web.json_response(snapshot_to_json(snapshot(), rollouts()))

    async def model(request: web.Request) -> web.Response:
        # An unseen model raises ModelNotFound: 404 with {"error": ...}.
        name = request.match_info["name"]
        return web.json_response(model_to_json(snapshot(), name, rollouts()))

    app = service_app(ready, lambda: render_metrics(registry, include_process=True))
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name}", model)
    return app
