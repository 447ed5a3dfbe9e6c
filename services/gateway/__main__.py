"""Run the gateway alone: ``python -m headwater.services.gateway``.

Configured by environment variables (``HEADWATER_GATEWAY_*``,
``HEADWATER_KAFKA_BOOTSTRAP``, ``HEADWATER_ARTIFACT_SIGNING_KEY``, ...); see README.md.
"""

from __future__ import annotations

from headwater.services.gateway.server import GatewayServer
from headwater.services.gateway.settings import GatewaySettings
from headwater.shared.lifecycle import run_service


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    run_service("gateway", GatewaySettings(), GatewayServer)


if __name__ == "__main__":
    main()
