"""Every registry RPC against real PostgreSQL, through the shared client."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.errors import (
    AlreadyExists,
    ArtifactIntegrityError,
    InvalidInput,
    ModelNotFound,
)
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, lineage, route
from headwater.shared.settings import DEV_SIGNING_KEY
from headwater.shared.specs import build_model
from tests.integration.registry.conftest import FEATURES, SPEC

pytestmark = pytest.mark.integration

REGRESSOR_SPEC = '{"component": "linear_model.LinearRegression"}'


async def test_models_create_get_list(client: RegistryClient) -> None:
    created = await client.create_model(
        "churn", "binary", FEATURES, description="who leaves", tags={"team": "growth"}
    )
    await client.create_model("price", "regression", [("area", "float")])

    assert created.task == registry_pb2.TASK_BINARY
    assert [(f.name, f.required) for f in created.features] == [
        ("x1", True),
        ("x2", True),
        ("plan", False),
    ]
    assert created.features[2].type == registry_pb2.FEATURE_TYPE_STR
    assert created.latest_version == 0 and created.created_at.seconds > 0
    assert await client.get_model("churn") == created
    assert [m.name for m in await client.list_models()] == ["churn", "price"]


async def test_model_errors(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)

    with pytest.raises(AlreadyExists, match="'churn' already exists"):
        await client.create_model("churn", "binary", FEATURES)
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        await client.get_model("nope")
    with pytest.raises(InvalidInput, match="invalid model name 'Bad Name'"):
        await client.create_model("Bad Name", "binary", FEATURES)
    with pytest.raises(InvalidInput, match="at least one feature"):
        await client.create_model("empty", "binary", [])
    with pytest.raises(InvalidInput, match="feature 'x' is declared twice"):
        await client.create_model("dup", "binary", [("x", "int"), ("x", "float")])
    with pytest.raises(InvalidInput, match="task is required"):
        await client.create_model("notask", registry_pb2.TASK_UNSPECIFIED, FEATURES)
    with pytest.raises(InvalidInput, match="feature 'x': type is required"):
        await client.create_model("notype", "binary", [("x", 0)])


async def test_create_version_from_spec_builds_a_signed_seeded_artifact(
    client: RegistryClient,
) -> None:
    await client.create_model("churn", "binary", FEATURES)

    first = await client.create_version("churn", SPEC, description="baseline")
    second = await client.create_version(
        "churn", SPEC, lineage(parent_version=1, seed=7), tags={"k": "v"}
    )

    assert (first.version, second.version) == (1, 2)
    assert first.lineage.source == registry_pb2.VERSION_SOURCE_SPEC
    assert first.lineage.seed > 0  # picked and recorded
    assert second.lineage.seed == 7 and second.lineage.parent_version == 1
    assert json.loads(first.spec_json) == json.loads(SPEC)
    assert first.artifact.format == "river-pickle/v1" and len(first.artifact.sha256) == 64
    assert (await client.get_model("churn")).latest_version == 2
    assert [v.version for v in await client.list_versions("churn")] == [1, 2]
    assert await client.get_version("churn", 2) == second

    fetched = await client.get_artifact("churn", 1)
    codec = ArtifactCodec(DEV_SIGNING_KEY)
    model = codec.decode(fetched.content, fetched.version.artifact.signature, first.artifact.sha256)
    assert fetched.version == first
    assert model.predict_proba_one({"x1": 0.1, "x2": -0.3}) == {False: 0.5, True: 0.5}  # fresh


async def test_create_version_with_artifact_bytes_verifies_and_deduplicates(
    client: RegistryClient, database_url: str
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    codec = ArtifactCodec(DEV_SIGNING_KEY)
    trained = build_model(SPEC, seed=3)
    trained.learn_one({"x1": 1.0, "x2": 2.0}, True)
    artifact = codec.encode(trained)
    offsets = [
        registry_pb2.OffsetRange(topic="examples", partition=1, first_offset=0, last_offset=9)
    ]
    snapshot = lineage(1, "online-snapshot", offsets, example_count=10, metrics={"accuracy": 0.7})

    v2 = await client.create_version(
        "churn", SPEC, snapshot, artifact=artifact.content, artifact_signature=artifact.signature
    )
    v3 = await client.create_version(
        "churn", SPEC, snapshot, artifact=artifact.content, artifact_signature=artifact.signature
    )

    assert v2.artifact.sha256 == v3.artifact.sha256 == artifact.sha256
    assert v2.lineage.offsets == offsets and v2.lineage.example_count == 10
    assert dict(v2.lineage.metrics) == {"accuracy": 0.7}
    assert v2.lineage.source == registry_pb2.VERSION_SOURCE_ONLINE_SNAPSHOT
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM artifacts") == 2  # v1 + one shared
    finally:
        await conn.close()
    got = await client.get_artifact("churn", 3)
    assert got.content == artifact.content

    with pytest.raises(ArtifactIntegrityError, match="signature does not verify"):
        await client.create_version(
            "churn", SPEC, artifact=artifact.content, artifact_signature="0" * 64
        )
    with pytest.raises(ArtifactIntegrityError):
        await client.create_version(
            "churn", SPEC, artifact=b"not a pickle", artifact_signature=codec.sign(b"not a pickle")
        )


async def test_create_version_errors(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)

    with pytest.raises(InvalidInput) as unknown:
        await client.create_version("churn", '{"component": "os.system"}')
    assert "unknown component 'os.system'" in str(unknown.value)
    assert "linear_model.LogisticRegression" in str(unknown.value)  # names what is allowed
    with pytest.raises(ModelNotFound, match="no model named 'ghost'"):
        await client.create_version("ghost", SPEC)
    with pytest.raises(ModelNotFound, match="parent version 5 of model 'churn' does not exist"):
        await client.create_version("churn", SPEC, lineage(parent_version=5))
    with pytest.raises(InvalidInput, match="task 'binary'"):
        await client.create_version("churn", REGRESSOR_SPEC)
    with pytest.raises(InvalidInput, match="first_offset 9 > last_offset 1"):
        bad = registry_pb2.OffsetRange(topic="examples", partition=0, first_offset=9, last_offset=1)
        await client.create_version("churn", SPEC, lineage(offsets=[bad]))
    with pytest.raises(InvalidInput, match="not valid JSON"):
        await client.create_version("churn", "{")
    assert (await client.get_model("churn")).latest_version == 0  # nothing half-written


async def test_version_numbers_are_unique_under_concurrency(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)

    created = await asyncio.gather(*(client.create_version("churn", SPEC) for _ in range(8)))

    assert sorted(v.version for v in created) == list(range(1, 9))
    assert (await client.get_model("churn")).latest_version == 8


async def test_version_lookup_errors(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)

    with pytest.raises(ModelNotFound, match="model 'churn' has no version 9"):
        await client.get_version("churn", 9)
    with pytest.raises(ModelNotFound, match="has no alias 'champion'"):
        await client.get_artifact("churn", "champion")
    with pytest.raises(ModelNotFound, match="no model named 'ghost'"):
        await client.list_versions("ghost")
    with pytest.raises(InvalidInput, match="version number or an alias"):
        await client.get_version("churn", 0)


async def test_aliases(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    await client.create_version("churn", SPEC)

    await client.set_alias("churn", "champion", 1)
    model = await client.set_alias("churn", "challenger", 2)
    assert dict(model.aliases) == {"champion": 1, "challenger": 2}
    assert (await client.get_version("churn", "challenger")).version == 2
    model = await client.set_alias("churn", "champion", 2)
    assert model.aliases["champion"] == 2

    model = await client.delete_alias("churn", "challenger")
    assert dict(model.aliases) == {"champion": 2}
    with pytest.raises(ModelNotFound, match="has no alias 'challenger'"):
        await client.delete_alias("churn", "challenger")
    with pytest.raises(ModelNotFound, match="has no version 3"):
        await client.set_alias("churn", "champion", 3)
    with pytest.raises(InvalidInput, match="invalid alias '7'"):
        await client.set_alias("churn", "7", 1)
    with pytest.raises(ModelNotFound):
        await client.set_alias("ghost", "champion", 1)


async def test_deployments(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_model("price", "regression", [("area", "float")])
    for _ in range(2):
        await client.create_version("churn", SPEC)
    with pytest.raises(ModelNotFound, match="'churn' has no deployment"):
        await client.get_deployment("churn")

    first = await client.deploy("churn", 1)
    second = await client.set_deployment(
        "churn", [(1, 0.9, "primary"), (2, 0.1, "canary")], mode="pinned", strategy="canary"
    )

    assert (first.revision, second.revision) == (1, 2)
    assert list(first.routes) == [route(1, 1.0, "primary")]
    assert first.mode == registry_pb2.SERVING_MODE_LIVE and first.strategy == "direct"
    assert [(r.version, r.weight, r.role) for r in second.routes] == [
        (1, 0.9, registry_pb2.ROUTE_ROLE_PRIMARY),
        (2, 0.1, registry_pb2.ROUTE_ROLE_CANARY),
    ]
    assert second.mode == registry_pb2.SERVING_MODE_PINNED and second.strategy == "canary"
    assert await client.get_deployment("churn") == second
    assert await client.list_deployments() == [second]


@pytest.mark.parametrize(
    ("routes", "error", "message"),
    [
        ([], InvalidInput, "at least one route"),
        ([(1, 0.5, "primary")], InvalidInput, "must sum to 1, got 0.5"),
        ([(1, 0.5, "primary"), (2, 0.5, "primary")], InvalidInput, "exactly one primary"),
        ([(1, 1.5, "primary")], InvalidInput, r"weight must be in \[0, 1\]"),
        ([(1, 1.0, 0)], InvalidInput, "role is required"),
        ([(1, 1.0, "primary"), (1, 0.0, "shadow")], InvalidInput, "one route only"),
        ([(9, 1.0, "primary")], ModelNotFound, "route to version 9"),
    ],
)
async def test_bad_routes_are_refused(
    client: RegistryClient, routes: list, error: type, message: str
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    await client.create_version("churn", SPEC)

    with pytest.raises(error, match=message):
        await client.set_deployment("churn", routes)
    with pytest.raises(ModelNotFound):
        await client.get_deployment("churn")  # nothing was written


async def test_shadow_routes_do_not_count_towards_the_weights(client: RegistryClient) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    await client.create_version("churn", SPEC)

    deployment = await client.set_deployment("churn", [(1, 1.0, "primary"), (2, 0.5, "shadow")])

    assert [r.role for r in deployment.routes][1] == registry_pb2.ROUTE_ROLE_SHADOW


async def test_audit_log_records_each_change_with_its_actor(
    client: RegistryClient, registry
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_model("price", "regression", [("area", "float")])
    await client.create_version("churn", SPEC)
    await client.set_alias("churn", "champion", 1)
    async with RegistryClient(registry.target) as anonymous:
        await anonymous.deploy("churn", 1)

    entries = await client.list_audit_entries("churn")
    every = await client.list_audit_entries(limit=2)

    assert [e.action for e in entries] == [
        "deployment.set",
        "alias.set",
        "version.create",
        "model.create",
    ]
    assert [e.actor for e in entries] == ["anonymous", "tester", "tester", "tester"]
    assert json.loads(entries[1].detail_json) == {"alias": "champion", "version": 1}
    assert len(every) == 2 and every[0].id > every[1].id
    with pytest.raises(InvalidInput, match="limit must be >= 0"):
        await client.list_audit_entries(limit=-1)


async def test_get_artifact_refuses_tampered_bytes(
    client: RegistryClient, database_url: str
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    version = await client.create_version("churn", SPEC)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE artifacts SET content = content || '\\x00'::bytea WHERE sha256 = $1",
            version.artifact.sha256,
        )
    finally:
        await conn.close()

    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        await client.get_artifact("churn", 1)


async def test_health_and_reflection(registry) -> None:
    async with grpc.aio.insecure_channel(registry.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "headwater.registry.v1.Registry"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for answer in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            names = {s.name for s in answer.list_services_response.service}
            assert "headwater.registry.v1.Registry" in names
            break


async def test_client_maps_unavailable_and_bounds_the_deadline(registry) -> None:
    from tests.fixtures import free_port

    async with RegistryClient(f"127.0.0.1:{free_port()}", deadline_s=0.5) as nowhere:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Exception) as raised:
            await nowhere.get_model("churn")
        assert loop.time() - started < 2.0
    from headwater.shared.errors import Unavailable

    assert isinstance(raised.value, Unavailable)
