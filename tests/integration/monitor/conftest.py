"""Helpers of the monitor tests (the broker fixtures: tests/conftest.py)."""

from __future__ import annotations

from typing import Any

from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.settings import KafkaSettings
from tests.fixtures import unique_name


def monitor_settings(kafka: KafkaSettings, **overrides: Any) -> MonitorSettings:
    """Settings of a test monitor: its own app id (so its own group), any free HTTP port."""
    values: dict[str, Any] = {
        "kafka": kafka,
        "metrics_port": 0,
        "app_id": unique_name("monitor"),
        "session_timeout_s": 6.0,
        **overrides,
    }
    return MonitorSettings(**values)
