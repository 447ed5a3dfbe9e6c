"""Two gateway replicas on one registry: heartbeats, a rolling rollout one replica at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from headwater.services.gateway.server import GatewayServer
from headwater.shared.errors import FailedPrecondition
from headwater.shared.pb import oip_pb2_grpc, registry_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, running_registry
from tests.integration.gateway.conftest import MODEL, GatewayFactory, started_gateways
from tests.integration.gateway.versions import answered_by, keyed_request, model_with_versions

pytestmark = pytest.mark.integration
KEYS = [f"user-{i}" for i in range(20)]
Stub = oip_pb2_grpc.GRPCInferenceServiceStub


@contextlib.asynccontextmanager
async def stack(
    database_url: str, kafka: KafkaSettings, replica_timeout_s: float
) -> AsyncIterator[tuple[RegistryClient, GatewayFactory]]:
    """A registry with this replica timeout, a client of it, and a gateway factory bound to it."""
    async with (
        running_registry(database_url, kafka, replica_timeout_s=replica_timeout_s) as registry,
        RegistryClient(registry.target, deadline_s=10, actor="tester") as client,
        started_gateways(kafka) as start,
    ):

        async def start_gateway(**overrides: object) -> GatewayServer:
            return await start(registry.target, **overrides)

        yield client, start_gateway


@contextlib.asynccontextmanager
async def stubs(*gateways: GatewayServer) -> AsyncIterator[list[Stub]]:
    async with contextlib.AsyncExitStack() as exits:
        channels = [
            await exits.enter_async_context(grpc.aio.insecure_channel(g.target)) for g in gateways
        ]
        yield [Stub(c) for c in channels]


@contextlib.asynccontextmanager
async def steady_load(
    stubs: list[Stub],
) -> AsyncIterator[tuple[Counter[tuple[int, int]], list[str]]]:
    """Requests to every replica until the block ends: (replica, version) answers, failures."""
    answers: Counter[tuple[int, int]] = Counter()
    failures: list[str] = []
    stop = asyncio.Event()

    async def client(index: int, stub: Stub) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            try:
                response = await stub.ModelInfer(keyed_request(f"k{sent % 20}"), timeout=5)
            except grpc.aio.AioRpcError as error:
                failures.append(f"replica {index}: {error.code().name}: {error.details()}")
                continue
            answers[(index, response.parameters["headwater_version"].int64_param)] += 1
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(client(i, s)) for i, s in enumerate(stubs)]
    try:
        yield answers, failures
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def listed(
    client: RegistryClient, ids: list[str], ready: int | None = None
) -> list[registry_pb2.Replica] | None:
    """The replicas when exactly ``ids`` are live (and each reports ``ready`` ready), else None."""
    replicas = await client.list_replicas(MODEL)
    if [r.id for r in replicas] != ids:
        return None
    if ready is not None and not all(reports_ready(r, ready) for r in replicas):
        return None
    return replicas


def reports_ready(replica: registry_pb2.Replica, version: int) -> bool:
    return any(v.version == version and v.ready for v in replica.versions)


async def all_answer(stub: Stub, version: int) -> bool:
    return set((await answered_by(stub, KEYS)).values()) == {version}


async def test_both_gateways_heartbeat_and_are_listed_with_their_versions(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    async with stack(database_url, kafka_settings, replica_timeout_s=15) as (client, start):
        await model_with_versions(client, 1)
        a = await start(replica_id="gw-a", heartbeat_s=0.1)
        b = await start(replica_id="gw-b", heartbeat_s=0.1)

        async def both_ready() -> list[registry_pb2.Replica] | None:
            return await listed(client, ["gw-a", "gw-b"], ready=1)

        replicas = await eventually(both_ready, timeout_s=15, what="both replicas listed ready")
        assert [r.address for r in replicas] == [a.target, b.target]
        assert all(r.versions[0].warmup_latency_ms > 0 for r in replicas)


async def test_a_rolling_rollout_switches_one_replica_at_a_time_once_it_reports_ready(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    async with stack(database_url, kafka_settings, replica_timeout_s=120) as (client, start):
        await model_with_versions(client, 2)  # v1 answers True, v2 False
        # gw-a sorts first but reports only when the test makes it beat
        late = await start(replica_id="gw-a", heartbeat_s=3600)
        quick = await start(replica_id="gw-b", heartbeat_s=0.1)
        await late.heartbeat.beat()
        await eventually(lambda: listed(client, ["gw-a", "gw-b"], ready=1), timeout_s=15)
        async with stubs(late, quick) as (late_stub, quick_stub), steady_load(
            [late_stub, quick_stub]
        ) as (answers, failures):
            started = await client.start_rollout(MODEL, 2, "rolling")

            async def v2_loaded_and_reported_by_gw_b_only() -> bool:
                replicas = await listed(client, ["gw-a", "gw-b"])
                entry = late.cache.find(MODEL)
                return (
                    replicas is not None
                    and entry is not None and 2 in entry.versions  # gw-a has it, unreported
                    and not reports_ready(replicas[0], 2) and reports_ready(replicas[1], 2)
                )  # fmt: skip

            await eventually(v2_loaded_and_reported_by_gw_b_only, timeout_s=15, what="v2 loaded")
            first = await client.transition_rollout(MODEL, "advance", expected_revision=1)
            assert list(first.switched_replicas) == ["gw-b"]  # gw-a has not reported v2 ready

            await eventually(lambda: all_answer(quick_stub, 2), timeout_s=10, what="gw-b on v2")
            assert await all_answer(late_stub, 1)  # told nothing new: still the baseline
            with pytest.raises(FailedPrecondition, match=r"waiting for gw-a\)"):
                await client.transition_rollout(MODEL, "advance")

            await late.heartbeat.beat()  # now gw-a reports v2 loaded and ready
            assert await all_answer(late_stub, 1)  # reporting ready switches nothing by itself
            last = await client.transition_rollout(MODEL, "advance", reason="gw-a ready")
            assert list(last.switched_replicas) == ["gw-b", "gw-a"] and last.step == 1
            for stub in (late_stub, quick_stub):  # the routes switched: the deployment says v2
                await eventually(lambda s=stub: all_answer(s, 2), timeout_s=10, what="all on v2")
            await client.transition_rollout(MODEL, "promote")
            deployment = await client.get_deployment(MODEL)

            async def promoted_routes_served() -> bool:
                revisions = {late.cache.revision(MODEL), quick.cache.revision(MODEL)}
                return revisions == {deployment.revision}

            await eventually(promoted_routes_served, timeout_s=10, what="promoted routes served")
            await asyncio.sleep(0.3)  # a few more heartbeats: no assignment is left
            assert await all_answer(late_stub, 2) and await all_answer(quick_stub, 2)

        assert failures == []  # some replica answered all along, none failed
        assert answers[(0, 1)] and answers[(1, 1)] and answers[(1, 2)] and answers[(0, 2)]
        (history,) = await client.list_rollouts(MODEL)
        assert [t.switched_replica for t in history.transitions] == ["", "gw-b", "gw-a", ""]
        assert history.rollout.id == started.id


async def test_a_stopped_gateway_drops_out_after_the_replica_timeout(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    async with stack(database_url, kafka_settings, replica_timeout_s=1.0) as (client, start):
        await model_with_versions(client, 1)
        await start(replica_id="gw-a", heartbeat_s=0.1)
        stopped = await start(replica_id="gw-b", heartbeat_s=0.1)
        await eventually(lambda: listed(client, ["gw-a", "gw-b"]), timeout_s=15, what="both")

        await stopped.stop(grace_s=1)
        await eventually(lambda: listed(client, ["gw-a"]), timeout_s=15, what="gw-b dropped out")
        await asyncio.sleep(1.5)  # longer than the timeout: gw-a heartbeats on
        assert await listed(client, ["gw-a"])
