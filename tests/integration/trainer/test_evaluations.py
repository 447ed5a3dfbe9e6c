"""Learners' evaluations in the real registry: each version's, and each checkpoint's."""

from __future__ import annotations

import pytest

from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.fixtures import eventually
from tests.integration.trainer.conftest import MODEL, TrainerFactory, produce_examples, stream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def evaluations(client: RegistryClient, version: int) -> dict[str, tuple[float, int]]:
    """The trainer's evaluations of a version: metric -> (value, examples)."""
    found = await client.list_evaluations(MODEL, version)
    return {e.metric: (e.value, e.examples) for e in found if e.source == "trainer"}


async def test_a_learner_and_its_checkpoint_are_evaluated_in_the_registry(
    deployed: int,
    start_trainer: TrainerFactory,
    kafka_settings: KafkaSettings,
    client: RegistryClient,
) -> None:
    await start_trainer(checkpoint_every_examples=30, evaluation_interval_s=0.3)
    await produce_examples(kafka_settings, stream(0, 30))

    async def checkpoint_evaluated() -> dict[str, tuple[float, int]] | None:
        if len(await client.list_versions(MODEL)) < 2:
            return None
        return await evaluations(client, 2) or None

    at_snapshot = await eventually(
        checkpoint_evaluated, timeout_s=20, interval_s=0.2, what="checkpoint evaluated"
    )
    lineage = (await client.get_version(MODEL, 2)).lineage
    assert at_snapshot == {
        "accuracy": (lineage.metrics["accuracy"], 30),
        "rolling_accuracy": (lineage.metrics["rolling_accuracy"], 30),
    }

    await produce_examples(kafka_settings, stream(30, 45))

    async def learner_moved_on() -> dict[str, tuple[float, int]] | None:
        found = await evaluations(client, deployed)
        return found if found.get("accuracy", (0, 0))[1] == 45 else None

    own = await eventually(learner_moved_on, timeout_s=20, interval_s=0.2, what="45 scored")
    assert set(own) == {"accuracy", "rolling_accuracy"} and 0 <= own["accuracy"][0] <= 1
    assert await evaluations(client, 2) == at_snapshot  # the checkpoint keeps its snapshot's
