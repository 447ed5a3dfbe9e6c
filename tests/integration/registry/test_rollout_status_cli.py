"""``headwater rollout status`` lists every live gateway replica and what it answers with."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner, Result

from headwater.cli.main import app
from headwater.services.registry.server import RegistryServer
from headwater.shared.registry_client import RegistryClient, replica_version
from tests.integration.registry.conftest import FEATURES, SPEC

pytestmark = pytest.mark.integration

READY = [replica_version("churn", 1, ready=True), replica_version("churn", 2, ready=True)]


async def cli(registry: RegistryServer, *args: str) -> Result:
    """Run the CLI in a thread (it runs its own event loop; this one serves the registry)."""
    runner = CliRunner()
    argv = [*args, "--registry", registry.target]
    return await asyncio.to_thread(runner.invoke, app, argv, env={"COLUMNS": "200"})


async def test_rollout_status_lists_every_live_replica_and_what_it_answers_with(
    registry: RegistryServer, client: RegistryClient
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    await client.create_version("churn", SPEC)
    await client.deploy("churn", 1)
    await client.heartbeat("gw-a", "10.0.0.1:8001", READY)
    await client.heartbeat("gw-b", "10.0.0.2:8001", READY[:1])
    await client.start_rollout("churn", 2, "rolling")
    await client.transition_rollout("churn", "advance")

    shown = await cli(registry, "rollout", "status", "churn", "--output", "json")
    assert shown.exit_code == 0, shown.output
    status = json.loads(shown.stdout)
    assert status["rollout"]["switched_replicas"] == ["gw-a"]
    replicas = {r["id"]: r for r in status["replicas"]}
    assert sorted(replicas) == ["gw-a", "gw-b"]
    assert replicas["gw-a"]["address"] == "10.0.0.1:8001"
    assert [a["version"] for a in replicas["gw-a"]["assignments"]] == ["2"]
    assert [a["version"] for a in replicas["gw-b"]["assignments"]] == ["1"]
    assert [v["version"] for v in replicas["gw-b"]["versions"]] == ["1"]

    table = await cli(registry, "rollout", "status", "churn")
    assert table.exit_code == 0, table.output
    assert "gateway replicas serving churn" in table.stdout
    assert "switched replicas" in table.stdout and "gw-a" in table.stdout
    assert "v2 (switched)" in table.stdout and "v1 (not switched yet)" in table.stdout
    assert "10.0.0.2:8001" in table.stdout and "v2 (ready)" in table.stdout
