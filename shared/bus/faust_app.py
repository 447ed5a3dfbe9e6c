"""The one Faust app factory: the options every in-process Faust app of headwater shares.

The trainer's join and the monitor run Faust apps inside their own processes
(see :mod:`headwater.shared.faust_runner`). On Tansu an app must never create
a topic itself (Tansu would create it with its own default partition count),
so every app declares no topic (the service creates its topics first), has no
leader topic, and no Faust web server (the service serves its own HTTP). The
group timeouts follow the session timeout as those of
:func:`~headwater.shared.bus.consumer.make_consumer` do, and the producer
waits for every in-sync replica.

>>> from pathlib import Path
>>> from headwater.shared.settings import KafkaSettings
>>> app = faust_app("hw.monitor", KafkaSettings(), Path("/tmp/hw"), session_timeout_s=10.0)
>>> app.conf.broker_heartbeat_interval, app.conf.broker_request_timeout, app.conf.web_enabled
(1.0, 15.0, False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from headwater.shared.settings import KafkaSettings


def faust_brokers(bootstrap: str) -> list[str]:
    """Faust's broker URLs for a comma-separated ``host:port`` list.

    >>> faust_brokers("a:9092, b:9093")
    ['kafka://a:9092', 'kafka://b:9093']
    """
    return [f"kafka://{hp.strip()}" for hp in bootstrap.split(",") if hp.strip()]


def faust_app(
    app_id: str,
    kafka: KafkaSettings,
    data_dir: Path,
    *,
    session_timeout_s: float,
    from_beginning: bool = True,
    table_partitions: int | None = None,
    producer_max_batch_bytes: int | None = None,
) -> faust.App:
    """A Faust app that declares no topic, has no leader topic and no web server.

    Args:
        app_id: The app id, which is also its consumer group.
        kafka: Broker addresses and request timeout.
        data_dir: Faust's working directory.
        session_timeout_s: Consumer group session (and rebalance) timeout.
        from_beginning: Where a group without committed offsets starts.
        table_partitions: For an app with tables: their partition count (that of
            their changelog topics and of the source topics); the tables live in
            memory, recovered from their changelogs, with no standby replica.
        producer_max_batch_bytes: Cap of one producer batch; Faust's default when None.

    """
    options: dict[str, Any] = {}
    if table_partitions is not None:
        options.update(
            store="memory://",
            topic_partitions=table_partitions,
            topic_replication_factor=1,
            table_standby_replicas=0,
        )
    if producer_max_batch_bytes is not None:
        options["producer_max_batch_size"] = producer_max_batch_bytes
    return faust.App(
        app_id,
        broker=faust_brokers(kafka.bootstrap),
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest" if from_beginning else "latest",
        broker_session_timeout=session_timeout_s,
        broker_rebalance_timeout=session_timeout_s,
        broker_heartbeat_interval=max(0.1, session_timeout_s / 10),
        broker_request_timeout=max(session_timeout_s + 5, kafka.request_timeout_ms / 1000),
        producer_acks=-1,
        **options,
    )
