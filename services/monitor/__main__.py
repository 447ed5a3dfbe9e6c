"""Run the monitor alone: ``python -m headwater.services.monitor``.

Configured by environment variables (``HEADWATER_MONITOR_*``,
``HEADWATER_KAFKA_BOOTSTRAP``, ...); see README.md.
"""

from __future__ import annotations

from headwater.services.monitor.server import MonitorServer
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.lifecycle import run_service


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    run_service("monitor", MonitorSettings(), MonitorServer)


if __name__ == "__main__":
    main()
