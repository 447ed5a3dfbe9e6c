"""The registry's collectors come from the shared get-or-create helper, once per process."""

from __future__ import annotations

import importlib.util
import inspect

from prometheus_client import Counter, Gauge, Histogram

from headwater.services.registry import metrics
from headwater.shared.bus import metrics as bus_metrics
from headwater.shared.metrics import get_or_create


def test_the_registry_collectors_are_the_shared_helpers() -> None:
    assert get_or_create(Counter, "headwater_registry_rpcs_total", "x", ("method", "code")) is (
        metrics.RPCS
    )
    assert get_or_create(Histogram, "headwater_registry_outbox_delay_seconds", "x") is (
        metrics.OUTBOX_DELAY_SECONDS
    )
    assert get_or_create(Gauge, "headwater_bus_buffered_events", "x", ("client_id",)) is (
        bus_metrics.BUFFERED_EVENTS
    )


def test_a_second_import_under_another_name_reuses_the_collectors() -> None:
    spec = importlib.util.spec_from_file_location("services.registry.metrics", metrics.__file__)
    assert spec is not None and spec.loader is not None
    again = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(again)  # would raise "Duplicated timeseries" without the helper

    assert again.RPCS is metrics.RPCS
    assert again.OUTBOX_LEADER is metrics.OUTBOX_LEADER


def test_no_private_prometheus_attribute_is_read() -> None:
    for module in (metrics, bus_metrics):
        assert "_names_to_collectors" not in inspect.getsource(module)
