"""Topic naming: logical names, the configurable prefix, and per-topic config."""

from __future__ import annotations

import pytest

from headwater.shared.bus.topics import ALL_TOPICS, Topic, logical_topic, topic_config, topic_name
from headwater.shared.errors import InvalidInput
from headwater.shared.settings import KafkaSettings


def test_every_architecture_topic_is_there_once() -> None:
    assert [t.value for t in ALL_TOPICS] == [
        "predictions",
        "feedback",
        "examples",
        "model-updates",
        "registry-events",
        "alerts",
        "dead-letter",
    ]


@pytest.mark.parametrize("prefix", ["headwater.", "t1234.", "", "prod-eu."])
def test_names_round_trip_through_the_prefix(prefix: str) -> None:
    kafka = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix=prefix)
    for topic in ALL_TOPICS:
        name = topic_name(kafka, topic)
        assert name == f"{prefix}{topic.value}"
        assert logical_topic(kafka, name) is topic


def test_topic_name_accepts_the_plain_string() -> None:
    kafka = KafkaSettings(bootstrap="127.0.0.1:1")
    assert topic_name(kafka, "feedback") == "headwater.feedback"
    with pytest.raises(ValueError):
        topic_name(kafka, "nope")


def test_unknown_names_are_rejected() -> None:
    kafka = KafkaSettings(bootstrap="127.0.0.1:1", topic_prefix="hw.")
    with pytest.raises(InvalidInput, match="not a headwater topic"):
        logical_topic(kafka, "hw.unknown")


def test_only_model_updates_is_compacted() -> None:
    compacted = [t for t in ALL_TOPICS if topic_config(t).get("cleanup.policy") == "compact"]
    assert compacted == [Topic.MODEL_UPDATES]
