"""What the fault tests share: services as real processes, reading topics to their end.

A :class:`ServiceProcess` runs ``python -m headwater.services.<name>`` with
``HEADWATER_*`` settings, logs to a file (shown when an assertion fails), and is
signalled by its PID only: ``kill()`` (SIGKILL, a crash), ``terminate()``
(SIGTERM, a graceful stop). It gets SIGKILL from the kernel if the test process
dies, so no service outlives the run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import grpc
import pytest
from aiokafka import ConsumerRecord
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headwater.cli.localstack.ports import die_with_parent_hook
from headwater.services.gateway.server import GatewayServer
from headwater.shared.bus.topics import Topic
from headwater.shared.settings import KafkaSettings
from tests.fixtures import assigned_consumer, eventually, prometheus_samples

SERVING = health_pb2.HealthCheckResponse.SERVING


def kafka_env(kafka: KafkaSettings, request_timeout_ms: int | None = None) -> dict[str, str]:
    """The ``HEADWATER_KAFKA_*`` variables of a test's broker and topic prefix."""
    timeout = request_timeout_ms if request_timeout_ms is not None else kafka.request_timeout_ms
    return {
        "HEADWATER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "HEADWATER_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "HEADWATER_KAFKA_PARTITIONS": str(kafka.partitions),
        "HEADWATER_KAFKA_REQUEST_TIMEOUT_MS": str(timeout),
    }


def registry_env(database_url: str, kafka: KafkaSettings, port: int) -> dict[str, str]:
    """A registry process on ``port`` (no metrics endpoint) with a fast outbox relay."""
    return {
        **kafka_env(kafka),
        "HEADWATER_DATABASE_URL": database_url,
        "HEADWATER_DATABASE_POOL_MAX_SIZE": "5",
        "HEADWATER_REGISTRY_PORT": str(port),
        "HEADWATER_REGISTRY_METRICS_PORT": "0",
        "HEADWATER_REGISTRY_OUTBOX_POLL_INTERVAL_MS": "50",
        "HEADWATER_REGISTRY_OUTBOX_RETRY_MAX_BACKOFF_MS": "300",
    }


class ServiceProcess:
    """One headwater service as a child process (see the module docstring).

    Args:
        service: ``registry``, ``gateway``, ``monitor`` or ``trainer``.
        env: ``HEADWATER_*`` variables on top of this process's environment.
        log_path: Where its stderr and stdout go.

    """

    def __init__(self, service: str, env: Mapping[str, str], log_path: Path) -> None:
        self.service = service
        self.env = {
            **os.environ,
            "HEADWATER_TELEMETRY_LOG_FORMAT": "console",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The child's PID."""
        assert self.process is not None, "start() first"
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: the signal that ended it)."""
        return self.process.returncode if self.process is not None else None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, for assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def start(self) -> ServiceProcess:
        """Spawn the process (returns at once; wait for it with the ``wait_*`` methods)."""
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"headwater.services.{self.service}",
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent_hook(signal.SIGKILL),
            )
        return self

    async def wait_grpc_serving(self, target: str, timeout_s: float = 45.0) -> None:
        """Wait until ``grpc.health.v1`` at ``target`` says SERVING; fail if the process died."""
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                self._check_alive()
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return reply.status == SERVING

            await eventually(
                serving, timeout_s=timeout_s, interval_s=0.2, what=f"{self.service} SERVING"
            )

    async def wait_http_ok(self, url: str, timeout_s: float = 45.0) -> None:
        """Wait until GET ``url`` answers 200; fail if the process died."""

        async def ok() -> bool:
            self._check_alive()
            try:
                status, _ = await http_get(url)
            except OSError:
                return False
            return status == 200

        await eventually(ok, timeout_s=timeout_s, interval_s=0.2, what=f"{self.service} {url}")

    def _check_alive(self) -> None:
        if self.returncode is not None:
            pytest.fail(f"{self.service} exited with {self.returncode}:\n{self.log_tail()}")

    def kill(self) -> None:
        """Crash it: SIGKILL to its PID."""
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        """Ask it to stop gracefully: SIGTERM to its PID."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for the process to exit; fail the test if it does not within ``timeout_s``."""
        assert self.process is not None, "start() first"
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            pytest.fail(
                f"{self.service} still running {timeout_s}s after being asked to stop:\n"
                f"{self.log_tail()}"
            )

    async def cleanup(self) -> None:
        """Kill it if it still runs, and reap it (test teardown)."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.kill()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            pass


async def http_get(url: str, timeout_s: float = 5.0, method: str = "GET") -> tuple[int, str]:
    """GET (or ``method``) ``url`` off the event loop; (status, body)."""

    def fetch() -> tuple[int, str]:
        request = urllib.request.Request(url, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    return await asyncio.to_thread(fetch)


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The Prometheus samples at ``127.0.0.1:port/metrics``: (name, sorted labels) -> value."""
    status, text = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text[:500]
    return prometheus_samples(text)


async def read_to_end(kafka: KafkaSettings, topic: Topic) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its current end offsets: exactly what was written.

    Group-less (no join); call once the writers are done, so losses and
    duplicates both show.
    """
    records: list[ConsumerRecord] = []
    async with assigned_consumer(kafka, topic) as (consumer, partitions):
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                break
            batch = await consumer.getmany(*partitions, timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        else:
            pytest.fail(f"{kafka.topic(topic.value)} not read to its end offsets {ends} within 20s")
    return records


Spawn = Callable[..., Awaitable[ServiceProcess]]
"""``await spawn(service, env)``: a started :class:`ServiceProcess` (the ``spawn`` fixture)."""

GatewayAt = Callable[..., Awaitable[GatewayServer]]
"""``await gateway_at(registry_target, **overrides)``: a started in-process gateway."""
