from __future__ import annotations

import asyncio
import os
import signal

import pytest

from headwater.shared import lifecycle
from headwater.shared.lifecycle import bounded_step, run_service, serve_until_signalled
from headwater.shared.settings import ServiceSettings


class Recorder:
    def __init__(self, start_s: float = 0.0, fail: bool = False) -> None:
        self.start_s = start_s
        self.fail = fail
        self.events: list[str] = []

    async def start(self) -> None:
        self.events.append("start")
        await asyncio.sleep(self.start_s)
        if self.fail:
            raise RuntimeError("cannot start")
        self.events.append("started")

    async def stop(self, grace_s: float) -> None:
        self.events.append(f"stop {grace_s}")


def _signal_soon(delay_s: float) -> None:
    asyncio.get_running_loop().call_later(delay_s, os.kill, os.getpid(), signal.SIGTERM)


async def test_sigterm_after_start_stops_with_the_grace() -> None:
    service = Recorder()
    _signal_soon(0.05)
    await asyncio.wait_for(serve_until_signalled(service, 2.0, "t"), 5)
    assert service.events == ["start", "started", "stop 2.0"]


async def test_sigterm_during_a_long_start_cancels_it_and_stops() -> None:
    service = Recorder(start_s=60)
    _signal_soon(0.05)
    await asyncio.wait_for(serve_until_signalled(service, 1.0, "t"), 5)
    assert service.events == ["start", "stop 1.0"]


async def test_a_failed_start_is_stopped_and_reraised() -> None:
    service = Recorder(fail=True)
    with pytest.raises(RuntimeError, match="cannot start"):
        await asyncio.wait_for(serve_until_signalled(service, 1.0, "t"), 5)
    assert service.events == ["start", "stop 1.0"]


def test_run_service_sets_up_telemetry_builds_inside_the_loop_and_serves_with_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    telemetry: list[str] = []
    monkeypatch.setattr(lifecycle, "setup_telemetry", lambda name, _: telemetry.append(name))
    service = Recorder()

    def build(settings: ServiceSettings) -> Recorder:
        _signal_soon(0.05)  # needs the running loop: the server is built inside it
        return service

    run_service("t", ServiceSettings(shutdown_grace_s=2.0), build)
    assert telemetry == ["t"]
    assert service.events == ["start", "started", "stop 2.0"]


async def test_a_bounded_step_says_whether_it_finished_and_never_raises() -> None:
    async def fails() -> None:
        raise OSError("connection reset")

    assert await bounded_step(asyncio.sleep(0), 1.0, "quick") is True
    assert await bounded_step(asyncio.sleep(60), 0.01, "slow") is False
    assert await bounded_step(fails(), 1.0, "failing") is False
