"""The trainer runs alone (``python -m headwater.services.trainer``) and survives a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from headwater.services.registry.server import RegistryServer
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, free_port, unique_name
from tests.integration.trainer.conftest import (
    MODEL,
    answers,
    produce_examples,
    read_updates,
    reference,
    state_of,
    stream,
    update_with,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class TrainerProcess:
    """A trainer child process with its own log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = int(env["HEADWATER_TRAINER_PORT"])
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "headwater.services.trainer",
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        await eventually(self.serving, timeout_s=40, interval_s=0.2, what="trainer /health 200")
        assert self.process.returncode is None, self.log_tail()

    async def serving(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            return True  # died: stop waiting, the caller's assertion shows the log
        return (await self.get("/health"))[0] == 200

    async def get(self, path: str) -> tuple[int, dict]:
        timeout = aiohttp.ClientTimeout(total=2)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(f"http://127.0.0.1:{self.port}{path}") as reply:
                    return reply.status, await reply.json()
        except (aiohttp.ClientError, TimeoutError):
            return 0, {}

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def stop(self, sig: int) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await asyncio.wait_for(self.process.wait(), timeout=20)


def trainer_env(kafka: KafkaSettings, registry: RegistryServer, app_id: str, **extra) -> dict:
    return {
        **os.environ,
        "HEADWATER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HEADWATER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "HEADWATER_KAFKA_PARTITIONS": str(kafka.partitions),
        "HEADWATER_REGISTRY_TARGET": registry.target,
        "HEADWATER_TRAINER_APP_ID": app_id,
        "HEADWATER_TRAINER_PORT": str(free_port()),
        "HEADWATER_TRAINER_SESSION_TIMEOUT_S": "2",
        "HEADWATER_TELEMETRY_LOG_FORMAT": "console",
        **extra,
    }


async def test_a_killed_trainer_relearns_only_what_it_had_not_saved(
    deployed: int, registry: RegistryServer, kafka_settings: KafkaSettings, client, tmp_path
) -> None:
    app_id = unique_name("trainer")
    # a long sync interval: what is learned after a save stays unsaved until the kill
    first = TrainerProcess(
        trainer_env(kafka_settings, registry, app_id, HEADWATER_TRAINER_SYNC_INTERVAL_MS="4000"),
        tmp_path / "first.log",
    )
    await first.start()
    try:
        await produce_examples(kafka_settings, stream(0, 30))
        await update_with(kafka_settings, model=MODEL, examples_learned=30)
        await produce_examples(kafka_settings, stream(30, 50))

        async def learned_50() -> bool:
            _, body = await first.get("/v1/models")
            return any(x["examples_learned"] == 50 for x in body.get("learners", []))

        await eventually(learned_50, timeout_s=10, interval_s=0.05, what="50 learned")
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        saved = [u.examples_learned for u in await read_updates(kafka_settings)]
        assert max(saved) == 30  # the last 20 were learned but not saved when it died
    finally:
        if first.process and first.process.returncode is None:
            first.process.kill()

    second = TrainerProcess(trainer_env(kafka_settings, registry, app_id), tmp_path / "second.log")
    await second.start()
    try:
        update = await update_with(kafka_settings, model=MODEL, examples_learned=50)
        [span] = update.offsets
        assert span.last_offset - span.first_offset + 1 == 50
        expected = await reference(client, deployed, stream(0, 50))
        assert answers(state_of(update)) == answers(expected.model)
        assert await second.stop(signal.SIGTERM) == 0, second.log_tail()
    finally:
        if second.process and second.process.returncode is None:
            second.process.kill()
