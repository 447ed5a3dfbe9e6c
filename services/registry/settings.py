"""Settings of the registry service (prefix ``HEADWATER_REGISTRY_``).

>>> s = RegistrySettings(port=0, metrics_port=0)
>>> (s.port, s.metrics_port, s.outbox_poll_interval_ms > 0)
(0, 0, True)
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from headwater.shared.settings import DatabaseSettings, ServiceSettings


class RegistrySettings(ServiceSettings):
    """Everything the registry process reads from its environment.

    The PostgreSQL server comes from ``HEADWATER_DATABASE_*``, the broker from
    ``HEADWATER_KAFKA_*`` and the artifact signing key from
    ``HEADWATER_ARTIFACT_*``; the fields below are the registry's own.
    """

    model_config = SettingsConfigDict(env_prefix="HEADWATER_REGISTRY_", frozen=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    port: int = Field(
        50051,
        ge=0,
        le=65535,
        description="gRPC port (Registry, grpc.health.v1 and reflection); 0 picks a free one.",
    )
    metrics_port: int = Field(
        9103, ge=0, le=65535, description="Prometheus /metrics port; 0 disables the endpoint."
    )
    outbox_poll_interval_ms: int = Field(
        200,
        ge=10,
        description="Longest the outbox relay sleeps between polls when nothing wakes it.",
    )
    outbox_batch_size: int = Field(100, ge=1, description="Outbox rows the relay reads per query.")
    outbox_retry_max_backoff_ms: int = Field(
        2_000, ge=10, description="Cap of the relay's backoff while the broker is unreachable."
    )
    outbox_retention_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long published outbox rows are kept before they are deleted.",
    )
    create_topics: bool = Field(
        True, description="Create the registry-events topic on start (idempotent)."
    )
    audit_list_max_entries: int = Field(
        1_000, ge=1, description="Most audit entries one ListAuditEntries call returns."
    )
    replica_timeout_s: float = Field(
        15.0,
        gt=0,
        description="A gateway replica whose last heartbeat is older than this is dropped "
        "from ListReplicas (and deleted) and never switched by a rolling rollout.",
    )
