"""Settings of the trainer (environment prefix ``HEADWATER_TRAINER_``).

>>> s = TrainerSettings()
>>> s.port, s.sync_interval_ms, s.checkpoint_every_examples, s.app_id
(9102, 250, 500, 'trainer')
>>> s.group_id("join"), s.join_changelog_topic()
('headwater.trainer-join', 'headwater.trainer-join-slots-changelog')
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from headwater.shared.settings import RegistryClientSettings, ServiceSettings

#: Name of the join's Faust table (its changelog topic is derived from it).
JOIN_TABLE = "slots"


class TrainerSettings(ServiceSettings):
    """How the trainer joins feedback, learns, syncs and checkpoints.

    The broker comes from ``HEADWATER_KAFKA_*``, the artifact signing key from
    ``HEADWATER_ARTIFACT_*`` and the registry from ``HEADWATER_REGISTRY_TARGET``;
    the fields below are the trainer's own.
    """

    model_config = SettingsConfigDict(env_prefix="HEADWATER_TRAINER_", frozen=True)

    port: int = Field(
        9102,
        ge=0,
        le=65535,
        description="HTTP port of /health, /metrics, /v1/models and the checkpoint endpoint "
        "(bound to host); 0 picks a free one.",
    )
    app_id: str = Field(
        "trainer",
        min_length=1,
        description="Names the trainer's consumer groups and the join's changelog topic "
        "(prefixed with the Kafka topic prefix).",
    )
    registry: RegistryClientSettings = Field(
        default_factory=RegistryClientSettings,
        description="Where the registry is (HEADWATER_REGISTRY_TARGET, _DEADLINE_S).",
    )
    join_ttl_s: float = Field(
        900.0,
        gt=0,
        description="How long a prediction waits for its feedback (and feedback for its "
        "prediction), and how long a joined id is remembered to drop duplicates.",
    )
    join_sweep_interval_s: float = Field(
        5.0, gt=0, description="How often expired join entries are deleted from the table."
    )
    join_producer_max_batch_bytes: int = Field(
        1,
        ge=1,
        description="Largest record batch of the join's producer. 1 sends one record per "
        "batch: Tansu reports a partition's end offset as the base offset of its last batch "
        "plus one, so a multi-record last batch would be skipped when the join's table is "
        "recovered. Raise it (e.g. 16384) on Apache Kafka.",
    )
    sync_interval_ms: int = Field(
        250,
        ge=10,
        description="Least time between two live-sync ModelUpdates of one learner (one per "
        "routed version of a model; published only when something was learned).",
    )
    checkpoint_every_examples: int = Field(
        500, ge=1, description="Examples learned between two checkpoint versions."
    )
    checkpoint_every_s: float = Field(
        300.0,
        gt=0,
        description="Longest time between two checkpoint versions while examples are learned.",
    )
    dedupe_ids: int = Field(
        1_000,
        ge=0,
        description="Recent example ids each learner remembers to drop duplicates: an "
        "example whose id came more than this many examples earlier is learned again. The "
        "ids travel in every ModelUpdate (10 bytes each: 1000 ids add 10 KB, 100000 "
        "would add 1 MB per update).",
    )
    metric_window: int = Field(
        1_000, ge=1, description="Examples in the learner's rolling metric window."
    )
    evaluation_interval_s: float = Field(
        10.0,
        gt=0,
        description="Least time between two reports of a learner's progressive-validation "
        "metrics to the registry (RecordEvaluation, source trainer; the promotion gates read "
        "them); each checkpoint reports its metrics at once.",
    )
    max_poll_records: int = Field(500, ge=1, description="Most examples read in one poll.")
    from_beginning: bool = Field(
        True,
        description="Where a consumer group without committed offsets starts: the earliest "
        "offsets (true) or the end of the topics (false).",
    )
    session_timeout_s: float = Field(
        10.0,
        ge=1,
        description="Consumer group session (and rebalance) timeout; a first join on Tansu "
        "takes about half of it, a rejoin after a restart about one and a half.",
    )
    not_deployed_recheck_s: float = Field(
        5.0,
        gt=0,
        description="How long a model without a deployment is remembered as such (its "
        "examples are dead-lettered) before the registry is asked again (a deployment event "
        "clears it at once).",
    )
    registry_retry_s: float = Field(
        1.0, gt=0, description="Pause before retrying examples when the registry is unavailable."
    )
    start_timeout_s: float = Field(
        60.0, gt=0, description="How long wait_ready() waits for both consumer groups to join."
    )
    data_dir: Path | None = Field(
        None,
        description="Faust's working directory (the join's table lives in memory and in "
        "its changelog topic); a fresh temporary directory when unset.",
    )

    def group_id(self, part: str) -> str:
        """The consumer group of one part of the trainer (``join`` or ``learners``)."""
        return f"{self.kafka.topic_prefix}{self.app_id}-{part}"

    def join_changelog_topic(self) -> str:
        """The changelog topic of the join's Faust table (created by the trainer)."""
        return f"{self.group_id('join')}-{JOIN_TABLE}-changelog"
