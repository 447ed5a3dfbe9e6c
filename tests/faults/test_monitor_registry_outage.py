"""The monitor's rollout controller through a registry outage: streams never wait, decisions do."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaProducer

from headwater.services.monitor.canary import Action
from headwater.services.monitor.server import MonitorServer
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.bus.codec import encode_event, protobuf_header
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import Unavailable
from headwater.shared.features import target_to_proto
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient, rollout_policy
from headwater.shared.settings import KafkaSettings, RegistryClientSettings
from tests.fixtures import eventually, free_port, running_registry, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

R = registry_pb2
MODEL = "churn"
SPEC = '{"pipeline": [{"component": "linear_model.LogisticRegression"}]}'


async def publish(kafka: KafkaSettings, per_arm: int, candidate_right_every: int) -> None:
    """``per_arm`` labelled examples of v1 (always right) and of v2 (right every n-th time)."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(per_arm):
            for version, role, correct in (
                (1, R.ROUTE_ROLE_PRIMARY, True),
                (2, R.ROUTE_ROLE_CANARY, i % candidate_right_every == 0),
            ):
                event = events_pb2.LabeledExample(
                    example_id=f"{version}-{i}-{unique_name('e')}", model=MODEL,
                    served_version=version, route_role=role,
                )  # fmt: skip
                event.label.CopyFrom(target_to_proto(True))
                event.prediction.CopyFrom(target_to_proto(correct))
                await producer.send(
                    kafka.topic(Topic.EXAMPLES.value), encode_event(event),
                    key=MODEL.encode(), headers=[protobuf_header()],
                )  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()


async def test_a_decision_made_while_the_registry_is_down_lands_once_it_is_back(
    database_url: str, kafka_settings: KafkaSettings
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    async with running_registry(database_url, kafka_settings, port=port):
        async with RegistryClient(target, deadline_s=10, actor="tester") as client:
            await client.create_model(MODEL, "binary", [("x", "float")])
            await client.create_version(MODEL, SPEC)
            await client.create_version(MODEL, SPEC)
            await client.deploy(MODEL, 1)
            policy = rollout_policy([50, 100], interval_s=0.5, min_samples=30)
            started = await client.start_rollout(MODEL, 2, "canary", policy)
        monitor = MonitorServer(
            MonitorSettings(
                kafka=kafka_settings,
                registry=RegistryClientSettings(target=target, deadline_s=1.0),
                metrics_port=0,
                app_id=unique_name("monitor"),
                session_timeout_s=6.0,
                rollout_tick_s=0.2,
            )
        )
        await monitor.start()
        await monitor.wait_ready(30)
        await publish(kafka_settings, per_arm=1, candidate_right_every=1)  # the model is seen

        async def tracked() -> bool:
            view = monitor.rollouts_snapshot().rollouts.get(MODEL)
            return view is not None and view.rollout.rollout_id == started.id

        await eventually(tracked, timeout_s=20, what="the rollout read from the registry")
    try:
        # the registry is down: the streams count on, the rollback waits
        await publish(kafka_settings, per_arm=200, candidate_right_every=4)

        async def decided() -> bool:
            view = monitor.rollouts_snapshot().rollouts[MODEL]
            latest = view.latest
            return latest is not None and latest.decision.action is Action.ROLLBACK

        await eventually(decided, timeout_s=20, what="the rollback decided")

        async def all_counted() -> bool:
            counted = monitor.snapshot().version(MODEL, 2)
            return counted is not None and counted.labelled == 201

        await eventually(all_counted, timeout_s=20, what="every example counted")
        await asyncio.sleep(1.0)  # a few more ticks against the dead registry
        assert monitor.rollouts_snapshot().decisions == {}
        assert monitor.rollouts_snapshot().rollouts[MODEL].rollout.state == "progressing"

        async with running_registry(database_url, kafka_settings, port=port):
            async with RegistryClient(target, deadline_s=10, actor="tester") as client:

                async def rolled_back() -> bool:
                    # gRPC shares one subchannel per address in a process: until the
                    # monitor's reconnect backoff ends, this client fails fast as well
                    with contextlib.suppress(Unavailable):
                        rollout = await client.get_rollout(MODEL)
                        return rollout.state == R.ROLLOUT_STATE_ROLLED_BACK
                    return False

                await eventually(rolled_back, timeout_s=40, what="the rollback after the outage")
                (history,) = await client.list_rollouts(MODEL)
                actions = [t.action for t in history.transitions]
                assert actions == [R.ROLLOUT_ACTION_START, R.ROLLOUT_ACTION_ROLLBACK]
                # the evidence of the moment it was decided (a rollback is final)
                assert history.transitions[-1].evidence["samples_candidate"] >= 30
            assert monitor.rollouts_snapshot().decisions == {(MODEL, "rollback"): 1}
    finally:
        await monitor.stop(grace_s=5.0)
