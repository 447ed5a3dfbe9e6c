"""Run the monitor alone: ``python -m headwater.services.monitor``.

Configured by environment variables (``HEADWATER_MONITOR_*``,
``HEADWATER_KAFKA_BOOTSTRAP``, ...); see README.md.
"""

from __future__ import annotations

import asyncio

from headwater.services.monitor.server import MonitorServer
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.lifecycle import serve_until_signalled
from headwater.shared.telemetry import setup_telemetry


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = MonitorSettings()
    setup_telemetry("monitor", settings.telemetry)
    server = MonitorServer(settings)
    asyncio.run(serve_until_signalled(server, settings.shutdown_grace_s, "monitor"))


if __name__ == "__main__":
    main()
