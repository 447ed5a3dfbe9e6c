"""Prometheus metrics of the bus, defined once per process.

The module may be imported under two names (``headwater.shared.bus.metrics``
and, by the doctest collector, ``shared.bus.metrics``); the collectors come
from :func:`headwater.shared.metrics.get_or_create`, so a second import reuses
them instead of failing with "Duplicated timeseries".
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from headwater.shared.metrics import get_or_create

EVENTS_PUBLISHED = get_or_create(
    Counter,
    "headwater_bus_events_published_total",
    "Events the broker acknowledged, by logical topic.",
    ("topic",),
)
EVENTS_RETRIED = get_or_create(
    Counter,
    "headwater_bus_events_retried_total",
    "Event sends retried after a broker error or timeout, by logical topic.",
    ("topic",),
)
EVENTS_DROPPED_BUFFER_FULL = get_or_create(
    Counter,
    "headwater_bus_events_dropped_buffer_full_total",
    "Events refused by publish() because the producer's buffer was full.",
    ("topic",),
)
EVENTS_FAILED = get_or_create(
    Counter,
    "headwater_bus_events_failed_total",
    "Events given up on: a non-retriable error, or still buffered when stop's grace ran out.",
    ("topic",),
)
EVENTS_DEAD_LETTERED = get_or_create(
    Counter,
    "headwater_bus_events_dead_lettered_total",
    "Records sent to the dead-letter topic, by source topic.",
    ("source_topic",),
)
BUFFERED_EVENTS = get_or_create(
    Gauge,
    "headwater_bus_buffered_events",
    "Events waiting in a producer's buffer, by producer client id.",
    ("client_id",),
)
