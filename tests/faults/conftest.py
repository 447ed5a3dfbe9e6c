"""Fixtures of the fault tests.

The in-process registry, client, deployed model and gateway fixtures are the
gateway integration tests' own (imported, not copied); ``spawn`` adds services
run as real processes, killed and reaped after the test whatever happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from headwater.shared.settings import KafkaSettings
from tests.faults.support import GatewayAt, ServiceProcess, Spawn
from tests.integration.gateway.conftest import (  # noqa: F401  (fixtures, by name)
    deployed,
    gateway,
    start_gateway,
    started_gateways,
    stub,
)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Start ``python -m headwater.services.<name>`` processes; all killed after the test."""
    started: list[ServiceProcess] = []

    async def start(service: str, env: dict[str, str]) -> ServiceProcess:
        log_path = tmp_path / f"{service}-{len(started)}.log"
        process = ServiceProcess(service, env, log_path)
        started.append(process)
        return await process.start()

    yield start
    for process in started:
        await process.cleanup()


@pytest.fixture
async def gateway_at(kafka_settings: KafkaSettings) -> AsyncIterator[GatewayAt]:
    """Start in-process gateways against any registry target; all stopped after the test.

    ``kafka=`` replaces the test's KafkaSettings; other keywords override GatewaySettings.
    """
    async with started_gateways(kafka_settings) as start:
        yield start
