"""A trainer process SIGKILLed with predictions waiting for labels and examples not yet saved.

Predictions come from a real gateway, labels from a plain producer; the trainer
runs as ``python -m headwater.services.trainer`` and is crashed, then restarted.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import pytest

from headwater.services.gateway.server import GatewayServer
from headwater.services.registry.server import RegistryServer
from headwater.shared.bus.codec import decode_event
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.features import features_from_proto
from headwater.shared.pb import events_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings
from tests.faults.support import ServiceProcess, Spawn, http_get, kafka_env, read_to_end, scrape
from tests.fixtures import eventually, free_port, unique_name
from tests.integration.gateway.conftest import MODEL, infer_request, prediction_ids
from tests.integration.trainer.conftest import (
    answers,
    labeled,
    produce_examples,
    read_updates,
    reference,
    state_of,
    stream,
    update_with,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOTAL = 50
SAVED_BEFORE_KILL, LEARNED_BEFORE_KILL = 20, 30  # the rest wait in the join table


class Trainer:
    """Trainer processes of one app id (so a restart is the same trainer) against a registry."""

    def __init__(self, spawn: Spawn, kafka: KafkaSettings, registry_target: str) -> None:
        self.spawn = spawn
        self.env = {
            **kafka_env(kafka),
            "HEADWATER_REGISTRY_TARGET": registry_target,
            "HEADWATER_TRAINER_APP_ID": unique_name("trainer"),
            "HEADWATER_TRAINER_SESSION_TIMEOUT_S": "2",
            "HEADWATER_TRAINER_REGISTRY_RETRY_S": "0.2",
            "HEADWATER_TRAINER_CHECKPOINT_EVERY_EXAMPLES": "100000",
        }
        self.port = 0

    async def start(self, **env: str) -> ServiceProcess:
        self.port = free_port()
        process = await self.spawn(
            "trainer", {**self.env, "HEADWATER_TRAINER_PORT": str(self.port), **env}
        )
        await process.wait_http_ok(f"http://127.0.0.1:{self.port}/health", timeout_s=45)
        return process

    async def learner(self) -> dict[str, Any]:
        status, body = await http_get(f"http://127.0.0.1:{self.port}/v1/models")
        assert status == 200, body
        learners = {item["model"]: item for item in json.loads(body)["learners"]}
        return learners.get(MODEL, {})

    async def wait_learned(self, count: int) -> dict[str, Any]:
        async def learned() -> dict[str, Any] | None:
            learner = await self.learner()
            return learner if learner.get("examples_learned") == count else None

        return await eventually(learned, timeout_s=20, interval_s=0.1, what=f"{count} learned")

    async def counter(self, name: str, **labels: str) -> float:
        samples = await scrape(self.port)
        return samples.get((f"headwater_trainer_{name}_total", tuple(sorted(labels.items()))), 0)


async def send_feedback(kafka: KafkaSettings, labels: dict[str, bool]) -> None:
    """Labels keyed by prediction id, as any producer of the feedback topic would send them."""
    producer = EventProducer(kafka, client_id="test-labels")
    await producer.start()
    try:
        for prediction_id, label in labels.items():
            event = events_pb2.FeedbackEvent(prediction_id=prediction_id)
            event.label.bool_label = label
            producer.publish(Topic.FEEDBACK, prediction_id, event)
        await producer.flush(timeout_s=15)
    finally:
        await producer.stop(grace_s=2)


async def predict_all(gateway: GatewayServer) -> list[tuple[str, bool]]:
    """TOTAL predictions through the gateway: (prediction id, true label) in order."""
    rows = [labeled(i) for i in range(TOTAL)]
    async with grpc.aio.insecure_channel(gateway.target) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        pairs: list[tuple[str, bool]] = []
        for start in range(0, TOTAL, 5):
            batch = rows[start : start + 5]
            response = await stub.ModelInfer(
                infer_request([features_from_proto(r.features) for r in batch]), timeout=5
            )
            ids = prediction_ids(response)
            pairs += [(i, r.label.bool_label) for i, r in zip(ids, batch, strict=True)]
    await gateway.producer.flush(timeout_s=15)
    return pairs


async def test_a_killed_trainer_keeps_waiting_predictions_and_learns_each_label_once(
    registry: RegistryServer,
    client: RegistryClient,
    gateway: GatewayServer,
    kafka_settings: KafkaSettings,
    spawn: Spawn,
) -> None:
    trainer = Trainer(spawn, kafka_settings, registry.target)
    # a slow live sync: what is learned after a save stays unsaved until the kill
    first = await trainer.start(HEADWATER_TRAINER_SYNC_INTERVAL_MS="3000")
    pairs = await predict_all(gateway)
    labels = dict(pairs)

    async def all_waiting() -> bool:
        return await trainer.counter("join_events", side="prediction", outcome="waiting") == TOTAL

    await eventually(all_waiting, timeout_s=20, interval_s=0.2, what="every prediction waiting")
    await send_feedback(kafka_settings, dict(pairs[:SAVED_BEFORE_KILL]))
    await update_with(kafka_settings, model=MODEL, examples_learned=SAVED_BEFORE_KILL)
    await send_feedback(kafka_settings, dict(pairs[SAVED_BEFORE_KILL:LEARNED_BEFORE_KILL]))
    await trainer.wait_learned(LEARNED_BEFORE_KILL)

    first.kill()
    assert await first.wait_exit(timeout_s=10) == -9
    saved = max(u.examples_learned for u in await read_updates(kafka_settings))
    assert SAVED_BEFORE_KILL <= saved <= LEARNED_BEFORE_KILL

    await trainer.start()
    # labels of predictions that were waiting in the killed trainer's table
    await send_feedback(kafka_settings, dict(pairs[LEARNED_BEFORE_KILL:]))
    learner = await trainer.wait_learned(TOTAL)
    update = await update_with(kafka_settings, model=MODEL, examples_learned=TOTAL)

    # every prediction was joined (a re-join after the crash may repeat an example) ...
    records = await read_to_end(kafka_settings, Topic.EXAMPLES)
    examples = [decode_event(events_pb2.LabeledExample, r.value, r.headers) for r in records]
    assert {e.example_id for e in examples} == set(labels)
    assert all(e.label.bool_label is labels[e.example_id] for e in examples)
    # ... and learned exactly once, in log order: the same model as learning them in-process
    first_seen: dict[str, events_pb2.LabeledExample] = {}
    for example in examples:
        first_seen.setdefault(example.example_id, example)
    expected = await reference(client, 1, list(first_seen.values()))
    assert answers(state_of(update)) == answers(expected.model)
    assert learner["base_version"] == 1
    assert await trainer.counter("examples", model=MODEL, outcome="learned") == TOTAL - saved

    # the lineage of a checkpoint: all of them, from exactly the offsets of the examples
    status, body = await http_get(
        f"http://127.0.0.1:{trainer.port}/v1/models/{MODEL}/checkpoint", method="POST"
    )
    assert status == 201, body
    version = json.loads(body)
    assert (version["parent_version"], version["example_count"]) == (1, TOTAL)
    [partition] = {r.partition for r in records}  # keyed by model: one partition
    offsets = [r.offset for r in records]
    assert version["offsets"] == [
        {
            "topic": kafka_settings.topic("examples"),
            "partition": partition,
            "first": min(offsets),
            "last": max(offsets),
        }
    ]


async def test_sigterm_saves_what_the_learner_learned_and_exits_0_within_the_grace(
    registry: RegistryServer,
    client: RegistryClient,
    deployed,
    kafka_settings: KafkaSettings,
    spawn: Spawn,
) -> None:
    trainer = Trainer(spawn, kafka_settings, registry.target)
    # no live sync before the stop: only the graceful stop can save what is learned
    process = await trainer.start(
        HEADWATER_TRAINER_SYNC_INTERVAL_MS="600000", HEADWATER_TRAINER_SHUTDOWN_GRACE_S="8"
    )
    await produce_examples(kafka_settings, stream(0, 10))
    await trainer.wait_learned(10)
    await update_with(kafka_settings, model=MODEL, examples_learned=10)  # the first sync
    await produce_examples(kafka_settings, stream(10, 25))
    await trainer.wait_learned(25)
    assert max(u.examples_learned for u in await read_updates(kafka_settings)) == 10

    started = time.monotonic()
    process.terminate()
    code = await process.wait_exit(timeout_s=20)
    elapsed = time.monotonic() - started
    assert code == 0, process.log_tail()
    assert elapsed < 8 + 5, f"stopped in {elapsed:.1f}s with a grace of 8s"
    update = await update_with(kafka_settings, model=MODEL, examples_learned=25)
    expected = await reference(client, 1, stream(0, 25))
    assert answers(state_of(update)) == answers(expected.model)

    await trainer.start()  # resumes from what the stop saved: learns nothing again
    await produce_examples(kafka_settings, stream(25, 30))
    await trainer.wait_learned(30)
    assert await trainer.counter("examples", model=MODEL, outcome="learned") == 5
