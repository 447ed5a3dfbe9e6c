"""The registry fixtures are the shared ones of tests/conftest.py, not a local copy."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tests.conftest as root
import tests.integration.registry.conftest as local
from headwater.services.registry.server import RegistryServer
from headwater.shared.registry_client import RegistryClient
from tests.fixtures import running_registry

pytestmark = pytest.mark.integration


def test_the_registry_conftest_defines_no_copy_of_the_server_fixtures() -> None:
    assert not hasattr(local, "registry") and not hasattr(local, "client")
    assert hasattr(root, "registry") and hasattr(root, "client")


async def test_the_shared_fixtures_serve_a_registry_and_a_client_of_it(
    registry: RegistryServer, client: RegistryClient
) -> None:
    await client.create_model("churn", "binary", [("x1", "float")])
    assert [m.name for m in await client.list_models()] == ["churn"]
    assert registry.settings.metrics_port == 0 and registry.port > 0


async def test_running_registry_takes_other_settings(database_url: str, kafka_settings) -> None:
    async with running_registry(database_url, kafka_settings, create_topics=False) as server:
        assert server.settings.create_topics is False
        async with grpc.aio.insecure_channel(server.target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
