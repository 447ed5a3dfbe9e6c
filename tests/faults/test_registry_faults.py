"""The registry process killed or stopped while its outbox relay is mid-publish."""

from __future__ import annotations

import time

import pytest

from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.faults.support import ServiceProcess, Spawn, registry_env, scrape
from tests.fixtures import eventually, free_port
from tests.integration.registry.conftest import (
    FEATURES,
    SPEC,
    outbox_sequences,
    read_all_events,
    unpublished,
    wait_all_published,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

K = events_pb2.RegistryEventKind
FAILURES = ("headwater_registry_outbox_publish_failures_total", ())
GRACE_S = 3.0


class RegistryProcess:
    """Starts registry processes on one port, database and metrics port."""

    def __init__(self, spawn: Spawn, database_url: str, kafka: KafkaSettings) -> None:
        self.spawn = spawn
        self.port, self.metrics_port = free_port(), free_port()
        self.target = f"127.0.0.1:{self.port}"
        # a short request timeout: a send to a paused broker fails (and is retried) within 1 s
        fast = kafka.model_copy(update={"request_timeout_ms": 1_000})
        self.env = {
            **registry_env(database_url, fast, self.port),
            "HEADWATER_REGISTRY_METRICS_PORT": str(self.metrics_port),
            "HEADWATER_REGISTRY_SHUTDOWN_GRACE_S": str(GRACE_S),
        }

    async def start(self) -> ServiceProcess:
        process = await self.spawn("registry", self.env)
        await process.wait_grpc_serving(self.target)
        return process

    async def wait_relay_failing(self) -> None:
        """Wait until the relay has failed to publish at least once (it is mid-publish)."""

        async def failing() -> bool:
            return (await scrape(self.metrics_port)).get(FAILURES, 0.0) > 0

        await eventually(failing, timeout_s=15, interval_s=0.1, what="a failed outbox publish")


async def test_changes_committed_before_a_kill_are_all_published_after_restart_in_order(
    broker, database_url: str, kafka_settings: KafkaSettings, spawn: Spawn
) -> None:
    registry = RegistryProcess(spawn, database_url, kafka_settings)
    first = await registry.start()
    async with RegistryClient(registry.target, deadline_s=10, actor="tester") as client:
        await client.create_model("churn", "binary", FEATURES)
        await client.create_version("churn", SPEC)
        await wait_all_published(database_url)
        broker.pause()
        try:
            for _ in range(3):
                await client.create_version("churn", SPEC)
            await client.set_alias("churn", "champion", 2)
            await client.deploy("churn", 3)
            assert await unpublished(database_url) == 5
            await registry.wait_relay_failing()
            first.kill()  # while the relay is retrying the first unpublished change
            assert await first.wait_exit(timeout_s=10) == -9
        finally:
            broker.resume()
    committed = await outbox_sequences(database_url)
    in_flight = committed[2]
    assert await unpublished(database_url) == 5  # committed, not marked published

    second = await registry.start()
    await wait_all_published(database_url, timeout_s=30)
    second.terminate()
    assert await second.wait_exit(timeout_s=GRACE_S + 5) == 0

    records = await read_all_events(kafka_settings)
    sequences = [event.sequence for _, event in records]
    assert list(dict.fromkeys(sequences)) == committed  # exactly the committed set, in order
    assert sequences == sorted(sequences)
    repeated = {s for s in sequences if sequences.count(s) > 1}
    assert repeated <= {in_flight}  # at least once: only the send cut short may repeat
    first_seen = {event.sequence: event for _, event in records}
    assert [first_seen[s].kind for s in committed] == [
        K.REGISTRY_EVENT_KIND_MODEL_CREATED,
        *[K.REGISTRY_EVENT_KIND_VERSION_CREATED] * 4,
        K.REGISTRY_EVENT_KIND_ALIAS_SET,
        K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED,
    ]
    assert [first_seen[s].version for s in committed[1:5]] == [1, 2, 3, 4]
    assert first_seen[committed[-1]].deployment.routes[0].version == 3


async def test_sigterm_while_the_relay_is_stuck_exits_cleanly_within_the_grace(
    broker, database_url: str, kafka_settings: KafkaSettings, spawn: Spawn
) -> None:
    registry = RegistryProcess(spawn, database_url, kafka_settings)
    process = await registry.start()
    async with RegistryClient(registry.target, deadline_s=10, actor="tester") as client:
        await client.create_model("churn", "binary", FEATURES)
        await wait_all_published(database_url)
        broker.pause()
        try:
            await client.create_version("churn", SPEC)
            await registry.wait_relay_failing()
            started = time.monotonic()
            process.terminate()
            code = await process.wait_exit(timeout_s=GRACE_S + 10)
            elapsed = time.monotonic() - started
        finally:
            broker.resume()
    assert code == 0, process.log_tail()
    assert elapsed < GRACE_S + 2, f"stopped in {elapsed:.1f}s, grace {GRACE_S}s"
    assert await unpublished(database_url) == 1  # kept for the next start

    restarted = await registry.start()
    await wait_all_published(database_url, timeout_s=30)
    restarted.terminate()
    assert await restarted.wait_exit(timeout_s=GRACE_S + 5) == 0
    records = await read_all_events(kafka_settings)
    kinds = list(dict.fromkeys((e.sequence, e.kind) for _, e in records))
    assert [kind for _, kind in kinds] == [
        K.REGISTRY_EVENT_KIND_MODEL_CREATED,
        K.REGISTRY_EVENT_KIND_VERSION_CREATED,
    ]
