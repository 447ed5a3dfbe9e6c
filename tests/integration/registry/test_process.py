"""The registry runs alone: ``python -m headwater.services.registry`` from settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, free_port
from tests.integration.registry.conftest import FEATURES

pytestmark = pytest.mark.integration


async def test_runs_alone_serves_health_and_metrics_and_stops_on_sigterm(
    database_url: str, kafka_settings: KafkaSettings, tmp_path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HEADWATER_DATABASE_URL": database_url,
        "HEADWATER_KAFKA_BOOTSTRAP": kafka_settings.bootstrap,
        "HEADWATER_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
        "HEADWATER_REGISTRY_PORT": str(port),
        "HEADWATER_REGISTRY_METRICS_PORT": str(metrics_port),
        "HEADWATER_TELEMETRY_LOG_FORMAT": "console",
    }
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "headwater.services.registry",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                try:
                    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return process.returncode is not None  # stop waiting if it died
                return answer.status == health_pb2.HealthCheckResponse.SERVING

            await eventually(serving, timeout_s=30, interval_s=0.2, what="registry SERVING")
            assert process.returncode is None, log_path.read_text()[-2000:]
        async with RegistryClient(f"127.0.0.1:{port}") as client:
            await client.create_model("churn", "binary", FEATURES)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert b'headwater_registry_rpcs_total{code="OK",method="CreateModel"} 1.0' in body

        process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(process.wait(), timeout=15)
        assert returncode == 0, log_path.read_text()[-2000:]
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), timeout=5)


async def test_start_fails_cleanly_without_its_database(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    from headwater.services.registry.server import RegistryServer
    from tests.fixtures import with_database
    from tests.integration.registry.conftest import registry_settings

    missing = with_database(database_url, "no_such_database")
    server = RegistryServer(registry_settings(missing, kafka_settings))

    with pytest.raises(Exception, match="no_such_database"):
        await server.start()
    await server.stop(grace_s=0)  # still safe to call
