"""Topic creation against the real broker: record size limits and extra topics."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from headwater.shared.bus.topics import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Topic,
    ensure_topic,
    ensure_topics,
    max_message_bytes_for,
)
from headwater.shared.errors import FailedPrecondition
from headwater.shared.settings import ArtifactSettings, KafkaSettings
from tests.fixtures import unique_name

pytestmark = pytest.mark.integration


async def topic_configs(kafka: KafkaSettings, name: str) -> dict[str, str]:
    """The configuration entries the broker reports for one topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    finally:
        await admin.close()
    (resource,) = response.resources
    return {entry[0]: entry[1] for entry in resource[4]}


async def partition_count(kafka: KafkaSettings, name: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics([name])
    finally:
        await admin.close()
    return len(topic["partitions"])


def fresh_settings(broker) -> KafkaSettings:
    return KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=f"{unique_name()}.", partitions=2)


async def test_model_updates_and_dead_letter_accept_a_whole_artifact(broker) -> None:
    kafka = fresh_settings(broker)
    await ensure_topics(kafka)

    for topic in (Topic.MODEL_UPDATES, Topic.DEAD_LETTER):
        config = await topic_configs(kafka, kafka.topic(topic.value))
        assert int(config["max.message.bytes"]) == DEFAULT_MAX_MESSAGE_BYTES
        assert DEFAULT_MAX_MESSAGE_BYTES > ArtifactSettings().max_bytes
    assert (await topic_configs(kafka, kafka.topic("model-updates")))["cleanup.policy"] == "compact"
    assert "max.message.bytes" not in await topic_configs(kafka, kafka.topic("predictions"))


async def test_the_size_limit_follows_the_artifact_settings(broker) -> None:
    kafka = fresh_settings(broker)
    limit = max_message_bytes_for(ArtifactSettings(max_bytes=200 * 1024 * 1024))
    await ensure_topics(kafka, [Topic.MODEL_UPDATES], max_message_bytes=limit)

    config = await topic_configs(kafka, kafka.topic("model-updates"))
    assert int(config["max.message.bytes"]) == limit > 200 * 1024 * 1024


async def test_ensure_topic_creates_one_extra_topic_idempotently(broker) -> None:
    kafka = fresh_settings(broker)
    name = f"{unique_name('app')}-table-changelog"

    assert await ensure_topic(kafka, name, 3, {"cleanup.policy": "compact"}) == 3
    assert await ensure_topic(kafka, name, 3) == 3  # existing: fine

    assert await partition_count(kafka, name) == 3
    assert (await topic_configs(kafka, name))["cleanup.policy"] == "compact"
    with pytest.raises(FailedPrecondition, match="exists with 3 partitions, not 4"):
        await ensure_topic(kafka, name, 4)
