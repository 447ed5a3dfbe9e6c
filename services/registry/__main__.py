"""Run the registry alone: ``python -m headwater.services.registry``.

Configured by environment variables (``HEADWATER_REGISTRY_*``,
``HEADWATER_DATABASE_URL``, ``HEADWATER_KAFKA_BOOTSTRAP``, ...); see README.md.
"""

from __future__ import annotations

import asyncio

from headwater.services.registry.server import RegistryServer
from headwater.services.registry.settings import RegistrySettings
from headwater.shared.lifecycle import serve_until_signalled
from headwater.shared.telemetry import setup_telemetry


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = RegistrySettings()
    setup_telemetry("registry", settings.telemetry)
    server = RegistryServer(settings)
    asyncio.run(serve_until_signalled(server, settings.shutdown_grace_s, "registry"))


if __name__ == "__main__":
    main()
