"""The monitor's rollout controller against the real broker and PostgreSQL registry.

A canary is started through the registry client; labelled examples of both
arms go to ``examples`` as the trainer's join would write them; the monitor
judges them and moves the rollout through the registry: a clearly worse
candidate is rolled back, a clearly better one advanced and promoted. The
registry's history keeps each decision with its evidence, ``alerts`` carries
it, and the monitor's HTTP shows and counts it. A candidate better on served
traffic whose trainer-reported score fails a promotion gate is advanced but
never promoted: the rollout is blocked, retried without hammering the audit
log or the alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from headwater.services.monitor.server import MonitorServer
from headwater.services.monitor.settings import MonitorSettings
from headwater.services.registry.server import RegistryServer
from headwater.shared.bus.codec import decode_event, encode_event, protobuf_header
from headwater.shared.bus.topics import Topic
from headwater.shared.features import target_to_proto
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient, rollout_policy
from headwater.shared.registry_gates_client import promotion_gates
from headwater.shared.settings import KafkaSettings, RegistryClientSettings
from tests.fixtures import (
    assigned_consumer,
    eventually,
    prometheus_samples,
    read_records,
    unique_name,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

R = registry_pb2
MODEL = "churn"
SPEC = '{"pipeline": [{"component": "linear_model.LogisticRegression"}]}'
FAST_CANARY = rollout_policy([50, 100], interval_s=0.5, min_samples=30)


@pytest.fixture
async def two_versions(client: RegistryClient) -> None:
    """MODEL with versions 1 (deployed alone) and 2."""
    await client.create_model(MODEL, "binary", [("x", "float")])
    await client.create_version(MODEL, SPEC)
    await client.create_version(MODEL, SPEC)
    await client.deploy(MODEL, 1)


@pytest.fixture
async def monitor(
    kafka_settings: KafkaSettings, registry: RegistryServer
) -> AsyncIterator[MonitorServer]:
    settings = MonitorSettings(
        kafka=kafka_settings,
        registry=RegistryClientSettings(target=registry.target, deadline_s=5.0),
        metrics_port=0,
        app_id=unique_name("monitor"),
        session_timeout_s=6.0,
        rollout_tick_s=0.2,
        rollout_blocked_retry_s=1.0,
    )
    server = MonitorServer(settings)
    await server.start()
    try:
        await server.wait_ready(30)
        yield server
    finally:
        await server.stop(grace_s=5.0)


def labelled(version: int, role: int, correct: bool) -> events_pb2.LabeledExample:
    """A joined example the version served (its prediction right or wrong), predicted now."""
    example_id = uuid.uuid4().hex
    event = events_pb2.LabeledExample(
        example_id=example_id, prediction_id=example_id, model=MODEL, served_version=version,
        route_role=role,
    )  # fmt: skip
    event.label.CopyFrom(target_to_proto(True))
    event.prediction.CopyFrom(target_to_proto(correct))
    event.predicted_at.GetCurrentTime()
    return event


async def serve_until(
    kafka: KafkaSettings,
    p_candidate: float,
    p_baseline: float,
    done: Callable[[], Awaitable[bool]],
    timeout_s: float = 60.0,
) -> None:
    """Publish 40 labelled examples per arm every 0.3 s until ``done()``."""
    rng = random.Random(11)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not await done():
            assert time.monotonic() < deadline, "the rollout was not decided in time"
            for _ in range(40):
                for event in (
                    labelled(1, R.ROUTE_ROLE_PRIMARY, rng.random() < p_baseline),
                    labelled(2, R.ROUTE_ROLE_CANARY, rng.random() < p_candidate),
                ):
                    await producer.send(
                        kafka.topic(Topic.EXAMPLES.value), encode_event(event),
                        key=MODEL.encode(), headers=[protobuf_header()],
                    )  # fmt: skip
            await producer.flush()
            await asyncio.sleep(0.3)
    finally:
        await producer.stop()


def ended(client: RegistryClient) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        rollout = await client.get_rollout(MODEL)
        return rollout.state in (R.ROLLOUT_STATE_PROMOTED, R.ROLLOUT_STATE_ROLLED_BACK)

    return probe


async def rollout_alerts(kafka: KafkaSettings, count: int) -> list[events_pb2.Alert]:
    """The first ``count`` rollout alerts on ``alerts`` (drift alerts may come between)."""

    async def probe() -> list[events_pb2.Alert]:
        records = await read_records(kafka, Topic.ALERTS, count)
        alerts = [decode_event(events_pb2.Alert, r.value, r.headers) for r in records]
        decided = [a for a in alerts if a.kind.startswith("rollout.")]
        return decided if len(decided) >= count else []

    return await eventually(probe, timeout_s=15, what=f"{count} rollout alerts")


async def monitor_view(server: MonitorServer) -> tuple[dict, dict]:
    """The model's JSON and the /metrics samples."""
    base = f"http://127.0.0.1:{server.http_port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{base}/v1/models/{MODEL}") as response:
            assert response.status == 200
            model = await response.json()
        async with session.get(f"{base}/metrics") as response:
            samples = prometheus_samples(await response.text())
    return model, samples


def decisions_counted(samples: dict, action: str) -> float:
    key = ("headwater_monitor_rollout_decisions_total", (("action", action), ("model", MODEL)))
    return samples.get(key, 0.0)


@pytest.mark.usefixtures("two_versions")
async def test_a_worse_canary_is_rolled_back_with_its_evidence(
    client: RegistryClient, kafka_settings: KafkaSettings, monitor: MonitorServer
) -> None:
    started = await client.start_rollout(MODEL, 2, "canary", FAST_CANARY, reason="try v2")

    await serve_until(kafka_settings, p_candidate=0.3, p_baseline=0.9, done=ended(client))

    (history,) = await client.list_rollouts(MODEL)
    assert history.rollout.id == started.id
    assert history.rollout.state == R.ROLLOUT_STATE_ROLLED_BACK
    rollback = history.transitions[-1]
    assert rollback.action == R.ROLLOUT_ACTION_ROLLBACK and rollback.actor == "monitor"
    assert "worse than the baseline" in rollback.reason
    assert rollback.evidence["p_value"] <= 0.05
    assert rollback.evidence["samples_candidate"] >= 30
    assert rollback.evidence["accuracy_candidate"] < rollback.evidence["accuracy_baseline"]
    assert [r.version for r in (await client.get_deployment(MODEL)).routes] == [1]

    (alert,) = await rollout_alerts(kafka_settings, 1)
    assert (alert.kind, alert.version, alert.severity) == (
        "rollout.rollback", 2, events_pb2.SEVERITY_WARNING)  # fmt: skip
    assert dict(alert.values) == dict(rollback.evidence)

    model, samples = await monitor_view(monitor)
    rollout = model["rollout"]
    assert (rollout["id"], rollout["state"], rollout["acting"]) == (started.id, "rolled_back", True)
    assert rollout["last_decision"]["action"] == "rollback"
    assert rollout["last_decision"]["evidence"]["p_value"] == rollback.evidence["p_value"]
    assert decisions_counted(samples, "rollback") == 1.0


@pytest.mark.usefixtures("two_versions")
async def test_a_better_canary_advances_and_is_promoted(
    client: RegistryClient, kafka_settings: KafkaSettings, monitor: MonitorServer
) -> None:
    started = await client.start_rollout(MODEL, 2, "canary", FAST_CANARY)
    watching = asyncio.create_task(judged_while_progressing(monitor))

    await serve_until(kafka_settings, p_candidate=0.95, p_baseline=0.85, done=ended(client))

    (history,) = await client.list_rollouts(MODEL)
    assert history.rollout.state == R.ROLLOUT_STATE_PROMOTED
    actions = [t.action for t in history.transitions]
    assert actions == [R.ROLLOUT_ACTION_START, R.ROLLOUT_ACTION_ADVANCE, R.ROLLOUT_ACTION_PROMOTE]
    advance, promote = history.transitions[1:]
    assert advance.evidence["step_percent"] == 50.0 and promote.evidence["step_percent"] == 100.0
    assert min(advance.evidence["step_samples_candidate"], advance.evidence[
        "step_samples_baseline"]) >= 30  # fmt: skip
    assert promote.evidence["step_samples_candidate"] >= 30
    assert (advance.actor, promote.actor) == ("monitor", "monitor")
    assert [(r.version, r.weight) for r in (await client.get_deployment(MODEL)).routes] == [
        (2, 1.0)]  # fmt: skip

    alerts = await rollout_alerts(kafka_settings, 2)
    assert [a.kind for a in alerts] == ["rollout.advance", "rollout.promote"]
    assert dict(alerts[1].values) == dict(promote.evidence)

    model, samples = await monitor_view(monitor)
    assert model["rollout"]["id"] == started.id and model["rollout"]["state"] == "promoted"
    assert decisions_counted(samples, "advance") == decisions_counted(samples, "promote") == 1.0
    assert await watching  # while it progressed, /v1/models showed it judged with evidence


async def judged_while_progressing(server: MonitorServer) -> bool:
    """Whether the monitor, at some moment, shows the rollout judged with its latest look."""

    async def probe() -> bool:
        with contextlib.suppress(AssertionError, aiohttp.ClientError):
            rollout = (await monitor_view(server))[0]["rollout"]
            latest = rollout and rollout["latest"]
            return bool(latest and rollout["judged"] and "samples_candidate" in latest["evidence"])
        return False

    return await eventually(probe, timeout_s=60, interval_s=0.1, what="the rollout judged")


async def every_alert(kafka: KafkaSettings, quiet_s: float = 1.0) -> list[events_pb2.Alert]:
    """Every alert on ``alerts`` so far (read until nothing more comes for ``quiet_s``)."""
    records = []
    async with assigned_consumer(kafka, Topic.ALERTS) as (consumer, _):
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            for part in (await consumer.getmany(timeout_ms=200)).values():
                if part:
                    records.extend(part)
                    quiet_since = time.monotonic()
    return [decode_event(events_pb2.Alert, r.value, r.headers) for r in records]


def blocked_tries(server: MonitorServer, at_least: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        with contextlib.suppress(AssertionError):  # 404 until the monitor saw the model
            rollout = (await monitor_view(server))[0]["rollout"]
            blocked = rollout and rollout["blocked"]
            return bool(blocked and blocked["refusals"] >= at_least)
        return False

    return probe


@pytest.mark.usefixtures("two_versions")
async def test_a_better_canary_failing_a_promotion_gate_is_advanced_but_never_promoted(
    client: RegistryClient, kafka_settings: KafkaSettings, monitor: MonitorServer
) -> None:
    started = await client.start_rollout(MODEL, 2, "canary", FAST_CANARY)
    # the candidate's learner scores 0.8 over 1000 examples, as the trainer reports it
    await client.record_evaluation(MODEL, 2, "trainer", "accuracy", 0.8, examples=1000)
    await client.set_promotion_gates(MODEL, promotion_gates(min_score=("accuracy", 0.85)))

    await serve_until(
        kafka_settings, p_candidate=0.95, p_baseline=0.85, done=blocked_tries(monitor, 3)
    )  # served traffic says promote; refused three times, 1 s apart

    (history,) = await client.list_rollouts(MODEL)
    assert (history.rollout.id, history.rollout.state) == (started.id, R.ROLLOUT_STATE_PROGRESSING)
    assert [t.action for t in history.transitions] == [
        R.ROLLOUT_ACTION_START, R.ROLLOUT_ACTION_ADVANCE]  # fmt: skip
    assert [(r.version, r.weight) for r in (await client.get_deployment(MODEL)).routes] == [
        (1, 0.0), (2, 1.0)]  # fmt: skip
    refused = [e for e in await client.list_audit_entries(MODEL) if e.action == "gates.refused"]
    assert len(refused) == 1 and refused[0].actor == "monitor"  # the same refusal, audited once
    detail = json.loads(refused[0].detail_json)
    assert (detail["action"], detail["rollout_id"]) == ("promote", started.id)

    gate = "gate min_score failed: accuracy 0.8 < 0.85 required (short by 0.05) over 1000 examples"
    alerts = [a for a in await every_alert(kafka_settings) if a.kind.startswith("rollout.")]
    assert [a.kind for a in alerts] == ["rollout.advance", "rollout.blocked"]  # alerted once
    blocked_alert = alerts[1]
    assert blocked_alert.version == 2 and blocked_alert.severity == events_pb2.SEVERITY_WARNING
    assert gate in blocked_alert.message and blocked_alert.values["step_percent"] == 100.0

    model, samples = await monitor_view(monitor)
    blocked = model["rollout"]["blocked"]
    assert blocked["action"] == "promote" and gate in blocked["message"]
    assert model["rollout"]["judged"] and model["rollout"]["last_decision"]["action"] == "advance"
    key = ("headwater_monitor_rollout_blocked_total", (("action", "promote"), ("model", MODEL)))
    assert samples[key] >= 3
    assert decisions_counted(samples, "promote") == 0.0
