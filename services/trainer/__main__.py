"""Run the trainer alone: ``python -m headwater.services.trainer``.

Configured by environment variables (``HEADWATER_TRAINER_*``,
``HEADWATER_KAFKA_BOOTSTRAP``, ``HEADWATER_ARTIFACT_SIGNING_KEY``, ...); see README.md.
"""

from __future__ import annotations

from headwater.services.trainer.server import TrainerServer
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.lifecycle import run_service


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    run_service("trainer", TrainerSettings(), TrainerServer)


if __name__ == "__main__":
    main()
