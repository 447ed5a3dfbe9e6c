"""Route changes on the real stack: atomic swaps under load, blue/green, the unload grace."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from headwater.services.gateway.server import GatewayServer
from headwater.shared.pb import oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from tests.fixtures import eventually
from tests.integration.gateway.conftest import MODEL, GatewayFactory
from tests.integration.gateway.versions import (
    CANARY,
    CHALLENGER,
    PRIMARY,
    answered_by,
    keyed_request,
    model_with_versions,
    ready,
    route,
)

pytestmark = pytest.mark.integration
KEYS = [f"user-{i}" for i in range(80)]


@dataclass
class Load:
    """Requests sent by a few concurrent clients until stopped, every outcome counted."""

    stub: oip_pb2_grpc.GRPCInferenceServiceStub
    clients: int = 4
    answered: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _client(self, index: int) -> None:
        sent = 0
        while not self._stop.is_set():
            key = f"load-{index}-{sent % 50}"
            sent += 1
            try:
                response = await self.stub.ModelInfer(keyed_request(key), timeout=5)
            except grpc.aio.AioRpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
                continue
            self.answered[response.parameters["headwater_version"].int64_param] += 1

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    def total(self) -> int:
        return sum(self.answered.values()) + len(self.failures)

    async def goes_on(self, requests: int = 20) -> None:
        """Wait until ``requests`` more have been answered (or failed)."""
        until = self.total() + requests

        async def reached() -> bool:
            return self.total() >= until

        await eventually(reached, what=f"{requests} more requests")


@pytest.fixture
async def stub_of() -> AsyncIterator:
    channels: list[grpc.aio.Channel] = []

    def open_stub(gateway: GatewayServer) -> oip_pb2_grpc.GRPCInferenceServiceStub:
        channels.append(grpc.aio.insecure_channel(gateway.target))
        return oip_pb2_grpc.GRPCInferenceServiceStub(channels[-1])

    yield open_stub
    for channel in channels:
        await channel.close()


async def test_a_canary_rollout_swaps_routes_atomically_with_no_failed_request_under_load(
    client: RegistryClient, start_gateway: GatewayFactory, stub_of
) -> None:
    await model_with_versions(client, 2)
    gateway = await start_gateway()
    stub = stub_of(gateway)
    on_canary: set[str] = set()
    async with Load(stub).running() as load:
        for weight in (0.05, 0.25, 0.5, 1.0):  # the registry's canary steps
            await route(client, gateway, (1, round(1 - weight, 2), PRIMARY), (2, weight, CANARY))
            answers = await answered_by(stub, KEYS)
            now = {k for k, v in answers.items() if v == 2}
            assert on_canary <= now, f"a key left the canary at {weight}"
            on_canary = now
            await load.goes_on()
        assert on_canary == set(KEYS)  # at 100 % the zero-weight primary answers nothing
        await route(client, gateway, (2, 1.0, PRIMARY), (1, 0.0, CHALLENGER))  # promoted
        await route(client, gateway, (1, 1.0, PRIMARY))  # and rolled back
        await load.goes_on()
    assert load.failures == []
    assert set(load.answered) == {1, 2} and load.total() > 50
    assert set((await answered_by(stub, KEYS)).values()) == {1}


async def test_blue_green_the_candidate_is_warm_before_the_switch_and_a_rollback_is_instant(
    client: RegistryClient, start_gateway: GatewayFactory, stub_of
) -> None:
    await model_with_versions(client, 2)
    gateway = await start_gateway(unload_grace_s=60)
    stub = stub_of(gateway)
    await route(client, gateway, (1, 1.0, PRIMARY), (2, 0.0, CHALLENGER))  # pending: v2 loads
    assert await ready(stub, 2)
    green = gateway.cache.get(MODEL).versions[2]
    assert set((await answered_by(stub, KEYS[:20])).values()) == {1}
    async with Load(stub).running() as load:
        await route(client, gateway, (2, 1.0, PRIMARY))  # the switch, blue no longer routed
        assert gateway.cache.get(MODEL).versions[2] is green  # the warm one, not a reload
        assert set((await answered_by(stub, KEYS[:20])).values()) == {2}
        assert 1 in gateway.cache.loaded(MODEL)  # blue kept for the grace
        blue = gateway.cache.reusable(MODEL, 1, live=True)
        await route(client, gateway, (1, 1.0, PRIMARY))  # rollback
        assert gateway.cache.get(MODEL).versions[1] is blue  # no fetch: instant
        await load.goes_on()
    assert load.failures == []
    assert set((await answered_by(stub, KEYS[:20])).values()) == {1}


async def test_a_version_no_longer_routed_is_unloaded_after_the_grace(
    client: RegistryClient, start_gateway: GatewayFactory, stub_of
) -> None:
    await model_with_versions(client, 2)
    gateway = await start_gateway(unload_grace_s=0.5)
    await route(client, gateway, (1, 0.5, PRIMARY), (2, 0.5, CANARY))
    await route(client, gateway, (1, 1.0, PRIMARY))  # canary rolled back
    assert gateway.cache.loaded(MODEL) == (1, 2)

    async def unloaded() -> bool:
        return gateway.cache.loaded(MODEL) == (1,)

    await eventually(unloaded, timeout_s=10, what="version 2 unloaded")
    assert not await ready(stub_of(gateway), 2)
