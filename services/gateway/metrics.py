"""Prometheus metrics of the gateway.

The module may be imported under two names (``headwater.services.gateway.metrics``
and, by the doctest collector, ``services.gateway.metrics``); collectors that
exist already are reused, so a second import never fails with "Duplicated
timeseries". Model labels only take names of models the gateway knows (an
unknown name counts as ``_unknown``), so a client cannot blow up cardinality.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)

UNKNOWN_MODEL = "_unknown"


def _metric(kind: type[M], name: str, doc: str, labels: tuple[str, ...] = (), **kw: Any) -> M:
    existing = REGISTRY._names_to_collectors.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name} is registered as {type(existing).__name__}")
        return existing
    return kind(name, doc, labels, **kw)


REQUESTS = _metric(
    Counter,
    "headwater_gateway_requests_total",
    "ModelInfer requests, by model, served version ('' when none) and status code.",
    ("model", "version", "code"),
)
ROWS = _metric(
    Counter,
    "headwater_gateway_rows_total",
    "Rows predicted, by model, version and route role.",
    ("model", "version", "role"),
)
LATENCY_SECONDS = _metric(
    Histogram,
    "headwater_gateway_request_duration_seconds",
    "Time from a ModelInfer request's arrival in the service to its answer.",
    ("model", "version"),
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
EVENTS_PUBLISHED = _metric(
    Counter,
    "headwater_gateway_prediction_events_buffered_total",
    "PredictionEvents handed to the producer (acknowledgements: headwater_bus_*).",
    ("model",),
)
EVENTS_DROPPED = _metric(
    Counter,
    "headwater_gateway_prediction_events_dropped_total",
    "PredictionEvents not published because the producer refused them (buffer full, stopping).",
    ("model", "reason"),
)
LIVE_UPDATES = _metric(
    Counter,
    "headwater_gateway_live_updates_total",
    "ModelUpdates received, by model and what became of them.",
    ("model", "outcome"),
)
REGISTRY_EVENTS = _metric(
    Counter,
    "headwater_gateway_registry_events_total",
    "RegistryEvents applied, by kind.",
    ("kind",),
)
RELOAD_FAILURES = _metric(
    Counter,
    "headwater_gateway_reload_failures_total",
    "Failed attempts to load a model's deployment from the registry (each is retried).",
    ("model",),
)
MODELS_SERVED = _metric(
    Gauge, "headwater_gateway_models_served", "Models deployed and loaded in this gateway."
)
