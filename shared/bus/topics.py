"""Logical topic names and their explicit creation.

Topic names are logical (``predictions``); the broker sees them with the
configured prefix:

>>> from headwater.shared.settings import KafkaSettings
>>> kafka = KafkaSettings(bootstrap="127.0.0.1:9092", topic_prefix="hw.")
>>> topic_name(kafka, Topic.PREDICTIONS)
'hw.predictions'
>>> Topic("model-updates") is Topic.MODEL_UPDATES
True
>>> [t.value for t in ALL_TOPICS][:3]
['predictions', 'feedback', 'examples']
>>> topic_config(Topic.MODEL_UPDATES)
{'cleanup.policy': 'compact'}
>>> topic_config(Topic.PREDICTIONS)
{}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from enum import StrEnum

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class Topic(StrEnum):
    """Every topic headwater reads or writes (logical name, without the prefix)."""

    PREDICTIONS = "predictions"
    FEEDBACK = "feedback"
    EXAMPLES = "examples"
    MODEL_UPDATES = "model-updates"
    REGISTRY_EVENTS = "registry-events"
    ALERTS = "alerts"
    DEAD_LETTER = "dead-letter"


ALL_TOPICS: tuple[Topic, ...] = tuple(Topic)
ALL = ALL_TOPICS

_COMPACTED = frozenset({Topic.MODEL_UPDATES})


def topic_name(kafka: KafkaSettings, topic: Topic | str) -> str:
    """The broker-side name of a logical topic (prefix + name)."""
    return kafka.topic(Topic(topic).value)


def logical_topic(kafka: KafkaSettings, name: str) -> Topic:
    """The logical topic of a broker-side name.

    >>> kafka = KafkaSettings(bootstrap="127.0.0.1:9092", topic_prefix="hw.")
    >>> logical_topic(kafka, "hw.feedback")
    <Topic.FEEDBACK: 'feedback'>
    >>> logical_topic(kafka, "other.feedback")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: topic 'other.feedback' is not a headwater topic ...
    """
    prefix = kafka.topic_prefix
    if name.startswith(prefix):
        try:
            return Topic(name[len(prefix) :])
        except ValueError:
            pass
    raise InvalidInput(f"topic {name!r} is not a headwater topic under prefix {prefix!r}")


def topic_config(topic: Topic) -> dict[str, str]:
    """Broker configuration of a topic: ``model-updates`` keeps only the latest per key."""
    return {"cleanup.policy": "compact"} if topic in _COMPACTED else {}


async def ensure_topics(
    kafka: KafkaSettings,
    topics: Iterable[Topic] = ALL_TOPICS,
    partitions: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Create every topic with the configured partition count; idempotent.

    An existing topic is left as it is. Returns once broker metadata shows each
    topic with at least ``partitions`` partitions.

    Args:
        kafka: Broker address, prefix and default partition count.
        topics: Logical topics to create (default: all of them).
        partitions: Partition count; ``kafka.partitions`` when None.
        timeout_s: Overall deadline; three times ``kafka.request_timeout_ms`` when None.

    Raises:
        Unavailable: The broker did not answer or the topics did not appear in time.

    """
    count = partitions if partitions is not None else kafka.partitions
    wanted = {topic_name(kafka, t): Topic(t) for t in topics}
    deadline_s = timeout_s if timeout_s is not None else 3 * kafka.request_timeout_ms / 1000
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        client_id="headwater-admin",
        request_timeout_ms=kafka.request_timeout_ms,
    )
    try:
        async with asyncio.timeout(deadline_s):
            await admin.start()
            await _create(admin, wanted, count)
            await _wait_visible(admin, wanted, count)
    except (TimeoutError, KafkaError, OSError) as err:
        raise Unavailable(
            f"could not create topics on {kafka.bootstrap} within {deadline_s}s: {err!r}"
        ) from err
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, wanted: Mapping[str, Topic], count: int) -> None:
    new = [
        NewTopic(name, count, 1, topic_configs=topic_config(topic))
        for name, topic in wanted.items()
    ]
    response = await admin.create_topics(new)
    for name, code, message in _topic_errors(response):
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            raise Unavailable(f"creating topic {name!r} failed: error {code} {message}")


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = []
    for entry in getattr(response, "topic_errors", []):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        errors.append((name, code, message))
    return errors


async def _wait_visible(
    admin: AIOKafkaAdminClient, wanted: Mapping[str, Topic], count: int
) -> None:
    missing = set(wanted)
    while True:
        described = await admin.describe_topics(sorted(missing))
        for topic in described:
            if topic.get("error_code", 0) == 0 and len(topic.get("partitions", [])) >= count:
                missing.discard(topic["topic"])
        if not missing:
            return
        log.debug("waiting for topics", extra={"missing": sorted(missing)})
        await asyncio.sleep(0.1)
