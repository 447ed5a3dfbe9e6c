"""Prometheus metrics of the bus, defined once per process.

The module may be imported under two names (``headwater.shared.bus.metrics``
and, by the doctest collector, ``shared.bus.metrics``); the collectors are
fetched from the default registry when they already exist, so a second import
never fails with "Duplicated timeseries".
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Gauge

C = TypeVar("C", Counter, Gauge)


def _get_or_create(kind: type[C], name: str, doc: str, labels: tuple[str, ...]) -> C:
    existing = REGISTRY._names_to_collectors.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise TypeError(f"metric {name} is registered as {type(existing).__name__}")
        return existing
    return kind(name, doc, labels)


EVENTS_PUBLISHED = _get_or_create(
    Counter,
    "headwater_bus_events_published_total",
    "Events the broker acknowledged, by logical topic.",
    ("topic",),
)
EVENTS_RETRIED = _get_or_create(
    Counter,
    "headwater_bus_events_retried_total",
    "Event sends retried after a broker error or timeout, by logical topic.",
    ("topic",),
)
EVENTS_DROPPED_BUFFER_FULL = _get_or_create(
    Counter,
    "headwater_bus_events_dropped_buffer_full_total",
    "Events refused by publish() because the producer's buffer was full.",
    ("topic",),
)
EVENTS_FAILED = _get_or_create(
    Counter,
    "headwater_bus_events_failed_total",
    "Events given up on: a non-retriable error, or still buffered when stop's grace ran out.",
    ("topic",),
)
EVENTS_DEAD_LETTERED = _get_or_create(
    Counter,
    "headwater_bus_events_dead_lettered_total",
    "Records sent to the dead-letter topic, by source topic.",
    ("source_topic",),
)
BUFFERED_EVENTS = _get_or_create(
    Gauge,
    "headwater_bus_buffered_events",
    "Events waiting in a producer's buffer, by producer client id.",
    ("client_id",),
)
