"""The transactional outbox on the real broker: every change once, in commit order."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from prometheus_client import REGISTRY

from headwater.services.registry.server import RegistryServer
from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually, free_port, running_registry
from tests.integration.registry.conftest import (
    FEATURES,
    SPEC,
    outbox_sequences,
    read_all_events,
    registry_settings,
    unpublished,
    wait_all_published,
)

pytestmark = pytest.mark.integration

K = events_pb2.RegistryEventKind


def failures() -> float:
    return REGISTRY.get_sample_value("headwater_registry_outbox_publish_failures_total") or 0.0


async def test_every_change_is_published_once_in_commit_order(
    client: RegistryClient, database_url: str, kafka_settings: KafkaSettings
) -> None:
    await client.create_model("churn", "binary", FEATURES)
    await client.create_version("churn", SPEC)
    await client.create_version("churn", SPEC)
    await client.set_alias("churn", "champion", 1)
    await client.deploy("churn", 1)
    await client.delete_alias("churn", "champion")
    deployment = await client.set_deployment("churn", [(1, 0.8, "primary"), (2, 0.2, "canary")])

    await wait_all_published(database_url)
    records = await read_all_events(kafka_settings)

    events = [event for _, event in records]
    assert [e.sequence for e in events] == await outbox_sequences(database_url)
    assert [e.sequence for e in events] == sorted({e.sequence for e in events})  # once, ordered
    assert [e.kind for e in events] == [
        K.REGISTRY_EVENT_KIND_MODEL_CREATED,
        K.REGISTRY_EVENT_KIND_VERSION_CREATED,
        K.REGISTRY_EVENT_KIND_VERSION_CREATED,
        K.REGISTRY_EVENT_KIND_ALIAS_SET,
        K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED,
        K.REGISTRY_EVENT_KIND_ALIAS_DELETED,
        K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED,
    ]
    assert [e.version for e in events[1:3]] == [1, 2]
    assert (events[3].alias, events[3].version) == ("champion", 1)
    assert events[-1].deployment == deployment
    assert {record.key for record, _ in records} == {b"churn"}
    assert {e.model for e in events} == {"churn"} and {e.actor for e in events} == {"tester"}
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.occurred_at.seconds > 0 for e in events)


async def test_concurrent_changes_on_many_models_are_each_published_once(
    client: RegistryClient, database_url: str, kafka_settings: KafkaSettings
) -> None:
    names = [f"m{i}" for i in range(4)]
    await asyncio.gather(*(client.create_model(n, "binary", FEATURES) for n in names))
    await asyncio.gather(*(client.create_version(n, SPEC) for n in names for _ in range(3)))

    await wait_all_published(database_url)
    records = await read_all_events(kafka_settings)

    sequences = sorted(event.sequence for _, event in records)
    assert sequences == await outbox_sequences(database_url)
    assert len(sequences) == len(set(sequences)) == 4 + 12
    by_partition: dict[int, list[int]] = defaultdict(list)
    versions_by_model: dict[str, list[int]] = defaultdict(list)
    for record, event in records:
        by_partition[record.partition].append(event.sequence)
        if event.kind == K.REGISTRY_EVENT_KIND_VERSION_CREATED:
            versions_by_model[event.model].append(event.version)
    for partition_sequences in by_partition.values():
        assert partition_sequences == sorted(partition_sequences)
    assert versions_by_model == {n: [1, 2, 3] for n in names}  # sequence order = commit order


async def test_a_change_made_while_the_broker_is_paused_is_published_when_it_resumes(
    broker, database_url: str, kafka_settings: KafkaSettings
) -> None:
    kafka = kafka_settings.model_copy(update={"request_timeout_ms": 1_000})
    async with running_registry(database_url, kafka) as server:
        async with RegistryClient(server.target, deadline_s=10) as client:
            await client.create_model("churn", "binary", FEATURES)
            await wait_all_published(database_url)
            failed_before = failures()
            broker.pause()
            try:
                await client.create_version("churn", SPEC)
                await client.set_alias("churn", "champion", 1)
                await client.deploy("churn", 1)

                async def relay_is_retrying() -> bool:
                    return failures() > failed_before

                await eventually(relay_is_retrying, timeout_s=15, what="a failed publish")
                assert await unpublished(database_url) == 3
            finally:
                broker.resume()
            await wait_all_published(database_url, timeout_s=30)

    records = await read_all_events(kafka_settings)
    sequences = [event.sequence for _, event in records]
    first_seen = list(dict.fromkeys(sequences))
    assert first_seen == await outbox_sequences(database_url)  # every change, in order
    assert sequences == sorted(sequences)  # a retried duplicate (if any) never reorders
    assert [event.kind for _, event in records][-1] == K.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED


async def test_changes_committed_while_kafka_is_unreachable_survive_a_restart(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    nowhere = kafka_settings.model_copy(
        update={"bootstrap": f"127.0.0.1:{free_port()}", "request_timeout_ms": 500}
    )
    offline = RegistryServer(registry_settings(database_url, nowhere, create_topics=False))
    await offline.start()
    try:
        async with RegistryClient(offline.target) as client:
            await client.create_model("churn", "binary", FEATURES)
            await client.create_version("churn", SPEC)
        assert await unpublished(database_url) == 2
    finally:
        await offline.stop(grace_s=1)

    online = RegistryServer(registry_settings(database_url, kafka_settings))
    await online.start()
    try:
        await wait_all_published(database_url)
    finally:
        await online.stop(grace_s=2)

    records = await read_all_events(kafka_settings)
    assert [event.kind for _, event in records] == [
        K.REGISTRY_EVENT_KIND_MODEL_CREATED,
        K.REGISTRY_EVENT_KIND_VERSION_CREATED,
    ]


async def test_two_replicas_share_one_relay_and_publish_each_change_once(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    first = RegistryServer(registry_settings(database_url, kafka_settings))
    second = RegistryServer(registry_settings(database_url, kafka_settings))
    await first.start()
    await second.start()
    stopped_first = False
    try:
        async with (
            RegistryClient(first.target) as one,
            RegistryClient(second.target) as two,
        ):
            await one.create_model("churn", "binary", FEATURES)
            await two.create_version("churn", SPEC)
            await one.create_version("churn", SPEC)
            await wait_all_published(database_url)
            await first.stop(grace_s=2)  # the active relay goes away; the standby takes over
            stopped_first = True
            await two.deploy("churn", 2)
            await wait_all_published(database_url, timeout_s=20)
    finally:
        if not stopped_first:
            await first.stop(grace_s=2)
        await second.stop(grace_s=2)

    records = await read_all_events(kafka_settings)
    assert [event.sequence for _, event in records] == await outbox_sequences(database_url)
    assert [event.version for _, event in records][1:3] == [1, 2]
