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
>>> topic_config(Topic.MODEL_UPDATES, max_message_bytes=2_000_000)
{'cleanup.policy': 'compact', 'max.message.bytes': '2000000'}
>>> topic_config(Topic.DEAD_LETTER, max_message_bytes=2_000_000)
{'max.message.bytes': '2000000'}
>>> topic_config(Topic.PREDICTIONS)
{}

``model-updates`` and ``dead-letter`` carry whole model states (and records
that hold them), so they get ``max.message.bytes`` = the largest artifact plus
:data:`MESSAGE_HEADROOM_BYTES` (Apache Kafka's default is about 1 MB). Pass
``max_message_bytes=max_message_bytes_for(settings.artifacts)`` to
:func:`ensure_topics` when the artifact limit is not the default. Topics that
exist already keep their configuration.

Tansu's memory storage (the local stack and the tests) does not compact:
``cleanup.policy=compact`` on ``model-updates`` is honoured by Apache Kafka, but
on Tansu every update stays, so a reader of that topic sees all of them (it must
keep the last per key itself) and memory grows with the updates written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from headwater.shared.errors import FailedPrecondition, InvalidInput, Unavailable
from headwater.shared.settings import ArtifactSettings, KafkaSettings

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
_LARGE_MESSAGES = frozenset({Topic.MODEL_UPDATES, Topic.DEAD_LETTER})

#: Room above the largest artifact for the rest of a record (envelope, headers).
MESSAGE_HEADROOM_BYTES = 1024 * 1024
#: ``max.message.bytes`` of the large-message topics with the default artifact limit.
DEFAULT_MAX_MESSAGE_BYTES: int = (
    ArtifactSettings.model_fields["max_bytes"].default + MESSAGE_HEADROOM_BYTES
)


def max_message_bytes_for(artifacts: ArtifactSettings) -> int:
    """``max.message.bytes`` that lets a record carry the largest artifact.

    >>> max_message_bytes_for(ArtifactSettings(max_bytes=4096)) - MESSAGE_HEADROOM_BYTES
    4096
    """
    return artifacts.max_bytes + MESSAGE_HEADROOM_BYTES


@dataclass(frozen=True)
class TopicSpec:
    """A broker-side topic to create: its partition count and configuration."""

    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)


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


def topic_config(
    topic: Topic, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> dict[str, str]:
    """Broker configuration of a topic.

    ``model-updates`` keeps only the latest per key; it and ``dead-letter``
    accept records up to ``max_message_bytes``.
    """
    config = {"cleanup.policy": "compact"} if topic in _COMPACTED else {}
    if topic in _LARGE_MESSAGES:
        config["max.message.bytes"] = str(max_message_bytes)
    return config


async def ensure_topics(
    kafka: KafkaSettings,
    topics: Iterable[Topic] = ALL_TOPICS,
    partitions: int | None = None,
    timeout_s: float | None = None,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> dict[str, int]:
    """Create every topic with the configured partition count; idempotent.

    An existing topic is left as it is, but one with fewer partitions than
    asked for is an error, and so are ``predictions`` and ``feedback`` with
    different counts (the join is local to a partition). Returns once broker
    metadata shows every topic.

    Args:
        kafka: Broker address, prefix and default partition count.
        topics: Logical topics to create (default: all of them).
        partitions: Partition count; ``kafka.partitions`` when None.
        timeout_s: Overall deadline; three times ``kafka.request_timeout_ms`` when None.
        max_message_bytes: ``max.message.bytes`` of ``model-updates`` and
            ``dead-letter`` (see :func:`max_message_bytes_for`).

    Returns:
        The partition count of each broker-side topic name.

    Raises:
        Unavailable: The broker did not answer or the topics did not appear in time.
        FailedPrecondition: Existing topics have too few or mismatched partitions.

    """
    count = partitions if partitions is not None else kafka.partitions
    wanted = {
        topic_name(kafka, t): TopicSpec(count, topic_config(Topic(t), max_message_bytes))
        for t in topics
    }
    found = await _ensure(kafka, wanted, timeout_s)
    _check_partitions(kafka, found, count)
    return found


async def ensure_topic(
    kafka: KafkaSettings,
    name: str,
    partitions: int,
    config: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> int:
    """Create one extra topic (not a headwater one, e.g. a Faust changelog); idempotent.

    Args:
        kafka: Broker address and request timeout (the prefix is not applied).
        name: Broker-side topic name, used as given.
        partitions: Partition count it must have.
        config: Broker configuration of a new topic (an existing one keeps its own).
        timeout_s: Overall deadline; three times ``kafka.request_timeout_ms`` when None.

    Returns:
        The topic's partition count (always ``partitions``).

    Raises:
        Unavailable: The broker did not answer or the topic did not appear in time.
        FailedPrecondition: The topic exists with another partition count.

    """
    found = await _ensure(kafka, {name: TopicSpec(partitions, dict(config or {}))}, timeout_s)
    if found[name] != partitions:
        raise FailedPrecondition(
            f"topic {name!r} exists with {found[name]} partitions, not {partitions}; recreate it"
        )
    return found[name]


async def _ensure(
    kafka: KafkaSettings, wanted: Mapping[str, TopicSpec], timeout_s: float | None
) -> dict[str, int]:
    """Create the topics (existing ones are fine); their partition counts once visible."""
    deadline_s = timeout_s if timeout_s is not None else 3 * kafka.request_timeout_ms / 1000
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.bootstrap,
        client_id="headwater-admin",
        request_timeout_ms=kafka.request_timeout_ms,
    )
    try:
        async with asyncio.timeout(deadline_s):
            await admin.start()
            existing = await _create(admin, wanted)
            return await _wait_visible(admin, wanted, existing)
    except (TimeoutError, KafkaError, OSError) as err:
        raise Unavailable(
            f"could not create topics on {kafka.bootstrap} within {deadline_s}s: {err!r}"
        ) from err
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, wanted: Mapping[str, TopicSpec]) -> set[str]:
    """Create the topics; return the names that existed already."""
    new = [
        NewTopic(name, spec.partitions, 1, topic_configs=dict(spec.config))
        for name, spec in wanted.items()
    ]
    response = await admin.create_topics(new)
    existing = set()
    for name, code, message in _topic_errors(response):
        if code == _TOPIC_ALREADY_EXISTS:
            existing.add(name)
        elif code != 0:
            raise Unavailable(f"creating topic {name!r} failed: error {code} {message}")
    return existing


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = []
    for entry in getattr(response, "topic_errors", []):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        errors.append((name, code, message))
    return errors


async def _wait_visible(
    admin: AIOKafkaAdminClient, wanted: Mapping[str, TopicSpec], existing: set[str]
) -> dict[str, int]:
    """Poll metadata until every topic shows (new ones with all their partitions)."""
    found: dict[str, int] = {}
    while True:
        missing = sorted(set(wanted) - set(found))
        for topic in await admin.describe_topics(missing):
            n = len(topic.get("partitions", []))
            name = topic["topic"]
            needed = 1 if name in existing else wanted[name].partitions
            if topic.get("error_code", 0) == 0 and n >= needed:
                found[name] = n
        if len(found) == len(wanted):
            return found
        log.debug("waiting for topics", extra={"missing": missing})
        await asyncio.sleep(0.1)


def _check_partitions(kafka: KafkaSettings, found: Mapping[str, int], count: int) -> None:
    short = {name: n for name, n in found.items() if n < count}
    if short:
        raise FailedPrecondition(
            f"topics exist with fewer than {count} partitions: {short}; "
            "recreate them or lower the partition setting"
        )
    joined = [topic_name(kafka, t) for t in (Topic.PREDICTIONS, Topic.FEEDBACK)]
    counts = {found[name] for name in joined if name in found}
    if len(counts) > 1:
        raise FailedPrecondition(
            f"{joined[0]} and {joined[1]} must have the same partition count "
            f"(the join is local to a partition): {[found[n] for n in joined]}"
        )
