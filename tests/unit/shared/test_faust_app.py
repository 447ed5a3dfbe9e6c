"""faust_app: the shared options, and exactly the ones each caller used before it existed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headwater.shared.bus.faust_app import faust_app
from headwater.shared.settings import KafkaSettings

KAFKA = KafkaSettings(bootstrap="a:9092,b:9093", request_timeout_ms=20_000)

SHARED = {
    "autodiscover": False,
    "web_enabled": False,
    "topic_allow_declare": False,
    "topic_disable_leader": True,
    "producer_acks": -1,
}


def conf_of(app: Any, names: list[str]) -> dict[str, Any]:
    return {name: getattr(app.conf, name) for name in names}


def test_an_app_without_tables_keeps_fausts_table_defaults(tmp_path: Path) -> None:
    app = faust_app("hw.monitor", KAFKA, tmp_path, session_timeout_s=10.0)
    assert app.conf.id == "hw.monitor"
    assert [str(url) for url in app.conf.broker] == ["kafka://a:9092", "kafka://b:9093"]
    assert str(app.conf.datadir) == str(tmp_path)
    assert conf_of(app, list(SHARED)) == SHARED
    assert conf_of(
        app,
        [
            "consumer_auto_offset_reset",
            "broker_session_timeout",
            "broker_rebalance_timeout",
            "broker_heartbeat_interval",
            "broker_request_timeout",
            "topic_partitions",
            "table_standby_replicas",
            "producer_max_batch_size",
        ],
    ) == {
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": 10.0,
        "broker_rebalance_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
        "broker_request_timeout": 20.0,  # the broker request timeout is longer than 10 + 5 s
        "topic_partitions": 8,  # Faust's defaults
        "table_standby_replicas": 1,
        "producer_max_batch_size": 16384,
    }


def test_an_app_with_tables_keeps_them_in_memory_partitioned_like_its_sources(
    tmp_path: Path,
) -> None:
    app = faust_app(
        "hw.trainer-join",
        KafkaSettings(),
        tmp_path,
        session_timeout_s=30.0,
        from_beginning=False,
        table_partitions=6,
        producer_max_batch_bytes=1,
    )
    assert conf_of(app, list(SHARED)) == SHARED
    assert str(app.conf.store) == "memory:"
    assert conf_of(
        app,
        [
            "consumer_auto_offset_reset",
            "broker_heartbeat_interval",
            "broker_request_timeout",
            "topic_partitions",
            "topic_replication_factor",
            "table_standby_replicas",
            "producer_max_batch_size",
        ],
    ) == {
        "consumer_auto_offset_reset": "latest",
        "broker_heartbeat_interval": 3.0,
        "broker_request_timeout": 35.0,
        "topic_partitions": 6,
        "topic_replication_factor": 1,
        "table_standby_replicas": 0,
        "producer_max_batch_size": 1,
    }
