"""Prometheus metrics of the gateway.

The module may be imported under two names (``headwater.services.gateway.metrics``
and, by the doctest collector, ``services.gateway.metrics``); collectors that
exist already are reused, so a second import never fails with "Duplicated
timeseries". Model labels only take names of models the gateway knows (an
unknown name counts as ``_unknown``), so a client cannot blow up cardinality.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from headwater.shared.metrics import get_or_create

UNKNOWN_MODEL = "_unknown"


REQUESTS = get_or_create(
    Counter,
    "headwater_gateway_requests_total",
    "ModelInfer requests, by model, served version ('' when none) and status code.",
    ("model", "version", "code"),
)
ROWS = get_or_create(
    Counter,
    "headwater_gateway_rows_total",
    "Rows predicted, by model, version and route role.",
    ("model", "version", "role"),
)
LATENCY_SECONDS = get_or_create(
    Histogram,
    "headwater_gateway_request_duration_seconds",
    "Time from a ModelInfer request's arrival in the service to its answer.",
    ("model", "version"),
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
EVENTS_PUBLISHED = get_or_create(
    Counter,
    "headwater_gateway_prediction_events_buffered_total",
    "PredictionEvents handed to the producer (acknowledgements: headwater_bus_*).",
    ("model",),
)
EVENTS_DROPPED = get_or_create(
    Counter,
    "headwater_gateway_prediction_events_dropped_total",
    "PredictionEvents not published because the producer refused them (buffer full, stopping).",
    ("model", "reason"),
)
LIVE_UPDATES = get_or_create(
    Counter,
    "headwater_gateway_live_updates_total",
    "ModelUpdates received, by model and what became of them.",
    ("model", "outcome"),
)
REGISTRY_EVENTS = get_or_create(
    Counter,
    "headwater_gateway_registry_events_total",
    "RegistryEvents applied, by kind.",
    ("kind",),
)
RELOAD_FAILURES = get_or_create(
    Counter,
    "headwater_gateway_reload_failures_total",
    "Failed attempts to load a model's deployment from the registry (each is retried).",
    ("model",),
)
MODELS_SERVED = get_or_create(
    Gauge, "headwater_gateway_models_served", "Models deployed and loaded in this gateway."
)
SHADOW_DROPPED = get_or_create(
    Counter,
    "headwater_gateway_shadow_dropped_total",
    "Requests not mirrored to their shadow routes: the shadow queue was full, or the gateway "
    "stopped before they ran.",
    ("model", "reason"),
)
HEARTBEAT_FAILURES = get_or_create(
    Counter,
    "headwater_gateway_heartbeat_failures_total",
    "Heartbeats the registry did not take (unreachable, or refused); each is retried at the next.",
)
