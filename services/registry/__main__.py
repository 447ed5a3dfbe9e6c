"""Run the registry alone: ``python -m headwater.services.registry``.

Configured by environment variables (``HEADWATER_REGISTRY_*``,
``HEADWATER_DATABASE_URL``, ``HEADWATER_KAFKA_BOOTSTRAP``, ...); see README.md.
"""

from __future__ import annotations

from headwater.services.registry.server import RegistryServer
from headwater.services.registry.settings import RegistrySettings
from headwater.shared.lifecycle import run_service


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    run_service("registry", RegistrySettings(), RegistryServer)


if __name__ == "__main__":
    main()
