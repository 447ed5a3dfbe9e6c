"""Settings of the monitor (environment prefix ``HEADWATER_MONITOR_``).

>>> s = MonitorSettings()
>>> s.metrics_port, s.window_size, s.app_id, s.group_id
(9100, 200, 'monitor', 'headwater.monitor')
>>> s.monitor_config().window_size
200
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from headwater.services.monitor.domain import MonitorConfig
from headwater.services.monitor.statistics import DEFAULT_LATENCY_BUCKETS_MS
from headwater.shared.settings import RegistryClientSettings, ServiceSettings


class MonitorSettings(ServiceSettings):
    """What the monitor measures, where it serves its metrics, how its Faust app runs."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_MONITOR_", frozen=True)

    metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description="HTTP port of /metrics, /v1/models and /health (bound to host); "
        "0 picks a free one.",
    )
    app_id: str = Field(
        "monitor",
        min_length=1,
        description="Names the monitor's consumer group (prefixed with the Kafka topic prefix, "
        "so deployments sharing a broker under different prefixes never share a group).",
    )
    window_size: int = Field(
        200, ge=1, description="Labelled examples in the rolling accuracy / MAE window."
    )
    drift_delta: float = Field(
        0.002,
        gt=0,
        lt=1,
        description="ADWIN confidence of the per-version error drift detector "
        "(smaller: fewer, surer detections).",
    )
    alert_cooldown_s: float = Field(
        300.0, ge=0, description="Least time between two alerts of one kind for one version."
    )
    latency_buckets_ms: tuple[float, ...] = Field(
        DEFAULT_LATENCY_BUCKETS_MS,
        min_length=1,
        description="Upper bounds of the latency histogram buckets (ms); +Inf is implicit.",
    )
    max_versions_per_model: int = Field(
        50,
        ge=1,
        description="Versions tracked per model; the least recently seen is forgotten first.",
    )
    session_timeout_s: float = Field(
        10.0,
        ge=1,
        description="Consumer group session timeout; a first join on Tansu takes about half.",
    )
    start_timeout_s: float = Field(
        60.0, gt=0, description="How long wait_ready() waits for the consumer group to join."
    )
    registry: RegistryClientSettings = Field(
        default_factory=RegistryClientSettings,
        description="Where the registry is (HEADWATER_REGISTRY_TARGET, _DEADLINE_S): the "
        "rollout controller reads rollouts from it and moves them.",
    )
    rollout_tick_s: float = Field(
        1.0,
        gt=0,
        description="How often the rollout controller looks at every rollout it judges "
        "(and retries an unreachable registry).",
    )
    rollout_blocked_retry_s: float = Field(
        30.0,
        gt=0,
        description="How long the rollout controller holds a decision the registry refused "
        "on the rollout as it stands (a failed promotion gate) before trying it again; a "
        "change of the model's gates tries it at once.",
    )
    data_dir: Path | None = Field(
        None,
        description="Faust's working directory (the monitor keeps no tables in it); "
        "a fresh temporary directory when unset.",
    )

    def monitor_config(self) -> MonitorConfig:
        """The pure core's parameters."""
        return MonitorConfig(
            window_size=self.window_size,
            drift_delta=self.drift_delta,
            alert_cooldown_s=self.alert_cooldown_s,
            latency_buckets_ms=self.latency_buckets_ms,
            max_versions_per_model=self.max_versions_per_model,
        )

    @property
    def group_id(self) -> str:
        """The consumer group (and Faust app id) of the monitor's replicas."""
        return f"{self.kafka.topic_prefix}{self.app_id}"
