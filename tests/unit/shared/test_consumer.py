"""make_consumer: the one consumer builder, with the values each of its callers needs."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRebalanceListener

from headwater.shared.bus.consumer import make_consumer
from headwater.shared.bus.topics import Topic
from headwater.shared.settings import KafkaSettings

KAFKA = KafkaSettings(topic_prefix="hw.", request_timeout_ms=10_000)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


def settings_of(consumer: Any) -> dict[str, Any]:
    return {
        "group_id": consumer._group_id,
        "auto_offset_reset": consumer._auto_offset_reset,
        "enable_auto_commit": consumer._enable_auto_commit,
        "session_timeout_ms": consumer._session_timeout_ms,
        "rebalance_timeout_ms": consumer._rebalance_timeout_ms,
        "heartbeat_interval_ms": consumer._heartbeat_interval_ms,
        "request_timeout_ms": consumer._client._request_timeout_ms,
        "max_poll_records": consumer._max_poll_records,
    }


async def test_a_group_consumer_subscribes_with_its_listener_and_the_learners_timeouts() -> None:
    listener = Listener()
    consumer = make_consumer(
        KAFKA,
        [Topic.EXAMPLES],
        "hw.trainer-learners",
        "trainer-learners",
        from_beginning=False,
        max_poll_records=200,
        session_timeout_ms=30_000,
        listener=listener,
    )
    assert settings_of(consumer) == {
        "group_id": "hw.trainer-learners",
        "auto_offset_reset": "latest",
        "enable_auto_commit": False,
        "session_timeout_ms": 30_000,
        "rebalance_timeout_ms": 30_000,
        "heartbeat_interval_ms": 3_000,
        "request_timeout_ms": 35_000,
        "max_poll_records": 200,
    }
    assert consumer.subscription() == {"hw.examples"}
    assert consumer._subscription.listener is listener


async def test_a_consumer_without_a_group_subscribes_to_nothing() -> None:
    consumer = make_consumer(KAFKA, [Topic.EXAMPLES], None, "reader", session_timeout_ms=500)
    assert consumer.subscription() == set()
    assert settings_of(consumer)["heartbeat_interval_ms"] == 100  # never below 100 ms
    assert settings_of(consumer)["request_timeout_ms"] == 10_000
