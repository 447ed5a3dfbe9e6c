"""Prometheus metrics of the trainer, defined once per process.

The module may be imported under two names (``headwater.services.trainer.metrics``
and, by the doctest collector, ``services.trainer.metrics``); collectors that
exist already are reused from the default registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from headwater.shared.metrics import get_or_create

JOIN_EVENTS = get_or_create(
    Counter,
    "headwater_trainer_join_events_total",
    "Predictions, shadow predictions and feedback seen by the join, by side (prediction, "
    "shadow, feedback) and outcome (waiting, joined, duplicate, missed, dead_lettered).",
    ("side", "outcome"),
)
JOIN_EXPIRED = get_or_create(
    Counter,
    "headwater_trainer_join_expired_total",
    "Join entries deleted by the TTL sweep: predictions never labelled (prediction), "
    "feedback whose prediction never came (feedback), remembered joins (joined), "
    "shadow predictions never labelled (shadow).",
    ("side",),
)
SHADOW_EXAMPLES_EMITTED = get_or_create(
    Counter,
    "headwater_trainer_shadow_examples_emitted_total",
    "Shadow predictions joined with their answer's label: the LabeledExamples the join wrote "
    "for them, by model (counted in examples_emitted_total too).",
    ("model",),
)
EXAMPLES_EMITTED = get_or_create(
    Counter,
    "headwater_trainer_examples_emitted_total",
    "LabeledExamples the join wrote to the examples topic, by model.",
    ("model",),
)
EXAMPLES = get_or_create(
    Counter,
    "headwater_trainer_examples_total",
    "Example records read by the learners, by model and outcome (learned, duplicate, "
    "already_consumed, not_deployed, dead_lettered, shadow_copy; of a record's learners, "
    "the first of dead_lettered, learned, duplicate, already_consumed).",
    ("model", "outcome"),
)
MODEL_UPDATES = get_or_create(
    Counter,
    "headwater_trainer_model_updates_total",
    "Live-sync ModelUpdates published, by model.",
    ("model",),
)
CHECKPOINTS = get_or_create(
    Counter,
    "headwater_trainer_checkpoints_total",
    "Checkpoint versions registered (created) or attempted in vain (failed), by model.",
    ("model", "outcome"),
)
LEARNER_EXAMPLES = get_or_create(
    Gauge,
    "headwater_trainer_learner_examples",
    "Examples the learner of a deployed version has learned since that (base) version.",
    ("model", "version"),
)
LEARNER_METRIC = get_or_create(
    Gauge,
    "headwater_trainer_learner_metric",
    "Progressive-validation metric of the learner of a deployed version (accuracy, "
    "rolling_accuracy, mae, rolling_mae), every learner of a model on the same examples.",
    ("model", "version", "metric"),
)
EVALUATIONS = get_or_create(
    Counter,
    "headwater_trainer_evaluations_total",
    "Learner evaluations sent to the registry, by model and outcome (recorded; refused: "
    "the registry said no, given up; failed: not answered or an error, tried again).",
    ("model", "outcome"),
)
