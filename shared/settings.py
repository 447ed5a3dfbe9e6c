"""Settings shared by the services: Kafka, PostgreSQL, telemetry, artifacts, registry.

Every service has one settings class of its own (prefix ``HEADWATER_<SERVICE>_``)
that embeds these sub-settings; each sub-settings class reads its own prefix,
so ``HEADWATER_KAFKA_BOOTSTRAP`` configures every service alike. Nothing else
in headwater reads ``os.environ``.

>>> KafkaSettings(bootstrap="127.0.0.1:9999").topic("predictions")
'headwater.predictions'
>>> env_variable(RegistryClientSettings, "target")
'HEADWATER_REGISTRY_TARGET'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SIGNING_KEY = "headwater-dev-signing-key-change-me"


class KafkaSettings(BaseSettings):
    """Where the Kafka-compatible broker is and how topics are named."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_KAFKA_", frozen=True)

    bootstrap: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    topic_prefix: str = Field("headwater.", description="Prefix of every topic name.")
    partitions: int = Field(4, ge=1, description="Partitions of each topic created by headwater.")
    request_timeout_ms: int = Field(10_000, ge=100, description="Deadline of one broker request.")
    producer_linger_ms: int = Field(5, ge=0, description="How long the producer waits to batch.")
    producer_buffer_max_events: int = Field(
        100_000, ge=1, description="Events buffered while the broker is unreachable."
    )

    def topic(self, name: str) -> str:
        """The full name of a logical topic (``predictions`` → ``headwater.predictions``)."""
        return f"{self.topic_prefix}{name}"


class DatabaseSettings(BaseSettings):
    """The PostgreSQL server of the registry."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_DATABASE_", frozen=True)

    url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/headwater"),
        description="asyncpg DSN, e.g. postgresql://user:pass@host:5432/db.",
    )
    pool_min_size: int = Field(1, ge=0, description="Connections kept open.")
    pool_max_size: int = Field(10, ge=1, description="Most connections open at once.")
    command_timeout_s: float = Field(10.0, gt=0, description="Deadline of one SQL command.")


class TelemetrySettings(BaseSettings):
    """Logs and traces."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_TELEMETRY_", frozen=True)

    log_level: str = Field("INFO", description="Root log level.")
    log_format: Literal["json", "console"] = Field("json", description="Structured JSON or text.")
    otlp_endpoint: str = Field(
        "", description="OTLP/gRPC collector for traces; empty keeps traces in-process only."
    )


class ArtifactSettings(BaseSettings):
    """How model artifacts are signed and verified."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_ARTIFACT_", frozen=True)

    signing_key: SecretStr = Field(
        SecretStr(DEV_SIGNING_KEY),
        description="HMAC-SHA256 key; every service of one deployment must share it.",
    )
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Largest artifact accepted.")


class RegistryClientSettings(BaseSettings):
    """How a client of the registry (gateway, trainer, monitor, the CLI) reaches it.

    The prefix is the registry's own (``HEADWATER_REGISTRY_``, as the CLI's
    ``HEADWATER_GATEWAY_TARGET`` shares the gateway's): the server's settings
    have no ``target`` or ``deadline_s`` field, and tests/unit/test_settings_doc.py
    fails if two settings classes ever read one variable.
    """

    model_config = SettingsConfigDict(env_prefix="HEADWATER_REGISTRY_", frozen=True)

    target: str = Field("127.0.0.1:50051", description="host:port of the registry.")
    deadline_s: float = Field(
        5.0, gt=0, description="Deadline of one registry call (reads are retried, bounded)."
    )


def env_variable(settings: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of a settings class."""
    return f"{settings.model_config.get('env_prefix', '')}{field.upper()}"


class ServiceSettings(BaseSettings):
    """Fields every service has; each service subclasses it with its own prefix."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    host: str = Field("127.0.0.1", description="Interface the service binds to.")
    shutdown_grace_s: float = Field(5.0, ge=0, description="Time in-flight work gets on SIGTERM.")
