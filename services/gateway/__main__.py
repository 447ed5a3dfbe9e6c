"""Run the gateway alone: ``python -m headwater.services.gateway``.

Configured by environment variables (``HEADWATER_GATEWAY_*``,
``HEADWATER_KAFKA_BOOTSTRAP``, ``HEADWATER_ARTIFACT_SIGNING_KEY``, ...); see README.md.
"""

from __future__ import annotations

import asyncio

from headwater.services.gateway.server import GatewayServer
from headwater.services.gateway.settings import GatewaySettings
from headwater.shared.lifecycle import serve_until_signalled
from headwater.shared.telemetry import setup_telemetry


async def serve(settings: GatewaySettings) -> None:
    """Build the server inside the running loop (its gRPC channels bind to it), then serve."""
    server = GatewayServer(settings)
    await serve_until_signalled(server, settings.shutdown_grace_s, "gateway")


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = GatewaySettings()
    setup_telemetry("gateway", settings.telemetry)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
