"""Fixtures of the fault tests.

The in-process registry, client, deployed model and gateway fixtures are the
gateway integration tests' own (imported, not copied); ``spawn`` adds services
run as real processes, killed and reaped after the test whatever happened.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.faults.support import ServiceProcess
from tests.integration.gateway.conftest import (  # noqa: F401  (fixtures, by name)
    client,
    deployed,
    gateway,
    registry,
    start_gateway,
    stub,
)

Spawn = Callable[..., Awaitable[ServiceProcess]]


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
