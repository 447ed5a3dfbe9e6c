"""Prometheus collectors defined once per process, whatever name their module is imported under.

A module that defines collectors at import time can be imported twice (as
``headwater.services.x.metrics`` and, by pytest's doctest collector, as
``services.x.metrics``); the second ``Counter(...)`` of the same name would
fail with "Duplicated timeseries". :func:`get_or_create` returns the collector
made the first time instead. It keeps its own table (keyed by registry and
name) in this module, reached under its canonical name, so it needs no private
``prometheus_client`` attribute.

>>> from prometheus_client import CollectorRegistry, Counter, Gauge
>>> registry = CollectorRegistry()
>>> first = get_or_create(Counter, "demo_total", "Demo.", ("kind",), registry=registry)
>>> get_or_create(Counter, "demo_total", "Demo.", ("kind",), registry=registry) is first
True
>>> get_or_create(Gauge, "demo_total", "Demo.", registry=registry)
Traceback (most recent call last):
...
TypeError: metric demo_total is already registered as a Counter, not a Gauge
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

_CANONICAL = "headwater.shared.metrics"
_COLLECTORS: dict[tuple[CollectorRegistry, str], MetricWrapperBase] = {}


def get_or_create(
    kind: type[M],
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    *,
    registry: CollectorRegistry = REGISTRY,
    **kwargs: Any,
) -> M:
    """The collector ``name`` of ``registry``: created on the first call, then the same one.

    Args:
        kind: ``Counter``, ``Gauge``, ``Histogram``, ``Summary``, …
        name: Full metric name (e.g. ``headwater_registry_rpcs_total``).
        documentation: Help text.
        labelnames: Label names.
        registry: Where to register it (the default registry unless a test passes its own).
        **kwargs: Passed to the constructor the first time (e.g. ``buckets``).

    Raises:
        TypeError: ``name`` was made by this function as another kind.

    """
    table = _table()
    existing = table.get((registry, name))
    if existing is None:
        existing = table[(registry, name)] = kind(
            name, documentation, labelnames, registry=registry, **kwargs
        )
    if not isinstance(existing, kind):
        raise TypeError(
            f"metric {name} is already registered as a {type(existing).__name__}, "
            f"not a {kind.__name__}"
        )
    return existing


def _table() -> dict[tuple[CollectorRegistry, str], MetricWrapperBase]:
    """The table of the canonically imported module (shared by every copy of this one)."""
    if __name__ == _CANONICAL:
        return _COLLECTORS
    canonical: Any = importlib.import_module(_CANONICAL)
    table: dict[tuple[CollectorRegistry, str], MetricWrapperBase] = canonical._COLLECTORS
    return table
