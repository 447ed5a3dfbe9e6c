"""Prometheus metrics of the registry, and the interceptor that times its RPCs.

The module may be imported under two names (``headwater.services.registry.metrics``
and, by the doctest collector, ``services.registry.metrics``); the collectors
come from :func:`headwater.shared.metrics.get_or_create`, so a second import
reuses them instead of failing with "Duplicated timeseries".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from headwater.shared.metrics import get_or_create

RPCS = get_or_create(
    Counter, "headwater_registry_rpcs_total", "Registry RPCs handled.", ("method", "code")
)
RPC_SECONDS = get_or_create(
    Histogram,
    "headwater_registry_rpc_duration_seconds",
    "Time to handle one registry RPC.",
    ("method",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHANGES = get_or_create(
    Counter, "headwater_registry_changes_total", "Committed registry changes.", ("action",)
)
OUTBOX_PUBLISHED = get_or_create(
    Counter, "headwater_registry_outbox_published_total", "Outbox events published."
)
OUTBOX_FAILURES = get_or_create(
    Counter,
    "headwater_registry_outbox_publish_failures_total",
    "Failed attempts to publish an outbox event (each is retried).",
)
OUTBOX_LAST_SEQUENCE = get_or_create(
    Gauge,
    "headwater_registry_outbox_last_published_sequence",
    "Sequence number of the last published outbox event.",
)
OUTBOX_LEADER = get_or_create(
    Gauge, "headwater_registry_outbox_leader", "1 while this process is the active relay."
)
OUTBOX_DELAY_SECONDS = get_or_create(
    Histogram,
    "headwater_registry_outbox_delay_seconds",
    "Time from an event's commit to its publication.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _status_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if code is None else str(code)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary-unary RPC; other kinds pass through untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the method's handler with a timer and a counter."""
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        return grpc.unary_unary_rpc_method_handler(
            _timed(method, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _timed(method: str, behavior: Behavior) -> Behavior:
    async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        code = "OK"
        try:
            return await behavior(request, context)
        except BaseException:
            code = _status_name(context)
            raise
        finally:
            RPCS.labels(method, code).inc()
            RPC_SECONDS.labels(method).observe(time.perf_counter() - started)

    return timed
