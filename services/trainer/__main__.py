"""Run the trainer alone: ``python -m headwater.services.trainer``.

Configured by environment variables (``HEADWATER_TRAINER_*``,
``HEADWATER_KAFKA_BOOTSTRAP``, ``HEADWATER_ARTIFACT_SIGNING_KEY``, ...); see README.md.
"""

from __future__ import annotations

import asyncio

from headwater.services.trainer.server import TrainerServer
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.lifecycle import serve_until_signalled
from headwater.shared.telemetry import setup_telemetry


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    settings = TrainerSettings()
    setup_telemetry("trainer", settings.telemetry)
    server = TrainerServer(settings)
    asyncio.run(serve_until_signalled(server, settings.shutdown_grace_s, "trainer"))


if __name__ == "__main__":
    main()
