"""Rollouts judged by live labels, on the whole stack.

Traffic goes through the gateway, labels to ``feedback`` as JSON from a plain
producer; the trainer joins them, the monitor judges the rollout from the
joined labels and moves it through the registry. Nothing here advances,
promotes or rolls back a canary: the monitor does.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest
from river import base

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, lineage
from headwater.shared.settings import ArtifactSettings
from headwater.shared.specs.building import build_model
from tests.e2e.conftest import RunningStack
from tests.e2e.rollout_traffic import (
    CONSTANT_SPEC,
    FEATURES,
    LEARNER_SPEC,
    Traffic,
    create_model,
    key_bucket,
    labelled_rows,
    monitor_versions,
    rollout_alerts,
    wait_for,
)

FINISHED = {registry_pb2.ROLLOUT_STATE_PROMOTED, registry_pb2.ROLLOUT_STATE_ROLLED_BACK,
            registry_pb2.ROLLOUT_STATE_ABORTED}
PRIMARY = registry_pb2.ROUTE_ROLE_PRIMARY
#: The canary policy of the judged scenarios: small, so each ends within seconds.
QUICK = ("--steps", "50,100", "--min-samples", "60", "--max-drop", "0.02")


def _json(stack: RunningStack, *args: str) -> Any:
    result = stack.cli(*args, "--output", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _routes(deployment: registry_pb2.Deployment) -> list[tuple[int, float, int]]:
    return [(r.version, r.weight, r.role) for r in deployment.routes]


async def _finished(stack: RunningStack, name: str) -> registry_pb2.Rollout | None:
    async with RegistryClient(stack.endpoints["registry"]) as registry:
        rollout = await registry.get_rollout(name)
    return rollout if rollout.state in FINISHED else None


async def _deployment(stack: RunningStack, name: str) -> registry_pb2.Deployment:
    async with RegistryClient(stack.endpoints["registry"]) as registry:
        return await registry.get_deployment(name)


def _actions(history: dict[str, Any]) -> list[str]:
    return [t["action"].removeprefix("ROLLOUT_ACTION_") for t in history["transitions"]]


async def _only_version_answers(traffic: Traffic, version: int) -> None:
    """Until ten requests in a row are answered by ``version`` (the gateway has the routes)."""
    async def ten_in_a_row() -> bool:
        answers = [await traffic.labelled_request() for _ in range(10)]
        return {r.version for results in answers for r in results} == {version}
    await wait_for(ten_in_a_row, 20, f"v{version} alone to answer")


@pytest.mark.timeout(150)
async def test_a_worse_canary_is_rolled_back_by_the_monitor(running_stack: RunningStack) -> None:
    name = f"worse-{uuid.uuid4().hex[:8]}"
    model = await create_model(running_stack, name, LEARNER_SPEC, CONSTANT_SPEC)
    async with Traffic(running_stack, model, seed=1) as traffic:
        await traffic.wait_until_served()
        await traffic.send(200)  # v1 learns the stream before v2 comes in
        # a long interval: the rollback must come within the first step, from the labels
        started = _json(running_stack, "deploy", name, "2", "--strategy", "canary", *QUICK,
                        "--interval", "30s", "--reason", "e2e: a canary that answers False")
        assert started["rollout"]["state"] == "ROLLOUT_STATE_PROGRESSING"
        await traffic.until(lambda: _finished(running_stack, name), 60,
                            "the monitor to decide the canary")
        assert traffic.served[2] > 0, "the canary answered some requests"
        await _only_version_answers(traffic, 1)

    (history,) = _json(running_stack, "rollout", "history", name)
    assert _actions(history) == ["START", "ROLLBACK"], history["transitions"][-1]
    assert history["rollout"]["state"] == "ROLLOUT_STATE_ROLLED_BACK"
    rollback = history["transitions"][-1]
    assert rollback["actor"] == "monitor" and "worse than the baseline" in rollback["reason"]
    evidence = rollback["evidence"]
    assert evidence["samples_candidate"] >= 60 and evidence["samples_baseline"] >= 60
    assert evidence["accuracy_candidate"] < 0.7 and evidence["accuracy_baseline"] > 0.85
    assert evidence["p_value"] <= 0.05 and evidence["step_percent"] == 50

    alert = (await rollout_alerts(running_stack, name, {"rollout.rollback"}))["rollout.rollback"]
    assert alert.version == 2 and dict(alert.values) == pytest.approx(evidence)
    assert _routes(await _deployment(running_stack, name)) == [(1, 1.0, PRIMARY)]


@pytest.mark.timeout(150)
async def test_a_better_canary_is_advanced_then_promoted(running_stack: RunningStack) -> None:
    name = f"better-{uuid.uuid4().hex[:8]}"
    model = await create_model(running_stack, name, CONSTANT_SPEC, LEARNER_SPEC)
    async with Traffic(running_stack, model, seed=2) as traffic:
        await traffic.wait_until_served()
        await traffic.send(100)  # every version's learner learns every label, v2's too
        _json(running_stack, "deploy", name, "2", "--strategy", "canary", *QUICK,
              "--interval", "2s", "--reason", "e2e: a canary that learns")
        await traffic.until(lambda: _finished(running_stack, name), 60,
                            "the monitor to promote the canary")
        await _only_version_answers(traffic, 2)

    (history,) = _json(running_stack, "rollout", "history", name)
    assert _actions(history) == ["START", "ADVANCE", "PROMOTE"], history["transitions"][-1]
    assert history["rollout"]["state"] == "ROLLOUT_STATE_PROMOTED"
    _, advance, promote = history["transitions"]
    assert advance["actor"] == promote["actor"] == "monitor"
    assert advance["step"] == 1 and "advance to 100 %" in advance["reason"]
    moved = advance["evidence"]
    assert moved["step_percent"] == 50 and moved["step_elapsed_s"] >= 2
    assert moved["step_samples_candidate"] >= 60 and moved["step_samples_baseline"] >= 60
    assert moved["accuracy_candidate"] > moved["accuracy_baseline"] and moved["p_value"] > 0.05
    final = promote["evidence"]
    assert final["step_percent"] == 100 and final["step_samples_candidate"] >= 60
    assert final["samples_candidate"] > moved["samples_candidate"]

    alerts = await rollout_alerts(running_stack, name, {"rollout.advance", "rollout.promote"})
    assert dict(alerts["rollout.promote"].values) == pytest.approx(final)
    assert _routes(await _deployment(running_stack, name)) == [(2, 1.0, PRIMARY)]


def _trained(rows: list[tuple[dict[str, float], bool]], invert: bool) -> base.Classifier:
    model = build_model(LEARNER_SPEC, seed=1)
    for row, label in rows:
        model.learn_one(row, label != invert)
    return model


async def _pinned_model(stack: RunningStack, name: str,
                        *trained: base.Classifier) -> registry_pb2.Model:
    """A version per trained model (signed artifacts), v1 deployed pinned: served as it is."""
    codec = ArtifactCodec.from_settings(ArtifactSettings())
    async with RegistryClient(stack.endpoints["registry"], actor="e2e") as registry:
        await registry.create_model(name, "binary", FEATURES)
        for estimator in trained:
            artifact = codec.encode(estimator)
            await registry.create_version(name, LEARNER_SPEC, lineage(seed=1),
                                          artifact=artifact.content,
                                          artifact_signature=artifact.signature)
        await registry.deploy(name, 1, mode="pinned")
        return await registry.get_model(name)


@pytest.mark.timeout(120)
async def test_a_shadow_never_changes_an_answer_and_is_scored(running_stack: RunningStack) -> None:
    name = f"shadow-{uuid.uuid4().hex[:8]}"
    training = labelled_rows(random.Random(3), 300)
    primary, shadow = _trained(training, invert=False), _trained(training, invert=True)
    model = await _pinned_model(running_stack, name, primary, shadow)

    async with Traffic(running_stack, model, seed=4) as traffic:
        await traffic.wait_until_served()
        stream = labelled_rows(traffic.rng, 40)
        rows, labels = [row for row, _ in stream], [label for _, label in stream]

        async def answers() -> tuple[list[tuple[int, Any, dict[str, float]]], list[Any]]:
            results = [r for i in range(0, 40, 5) for r in await traffic.ask(rows[i:i + 5])]
            return [(r.version, r.label, dict(r.proba)) for r in results], results

        alone, _ = await answers()
        _json(running_stack, "deploy", name, "2", "--strategy", "shadow", "--shadow-percent",
              "100", "--interval", "10m", "--min-samples", "1000")

        async def mirrored() -> bool:  # unlabelled probes until the shadow's predictions count
            await traffic.ask(rows[:1])
            return bool((await monitor_versions(running_stack, name)).get(2, {}).get("requests"))
        await wait_for(mirrored, 20, "the gateway to mirror requests to the shadow")
        shadowed, results = await answers()
        await traffic.label(results, labels)

    assert shadowed == alone, "a shadow route changed an answer"
    assert [label for _, label, _ in alone] == [primary.predict_one(row) for row in rows]

    def accuracy(trained: base.Classifier) -> float:
        return sum(trained.predict_one(r) == y for r, y in stream) / len(stream)

    async def both_scored() -> dict[int, dict[str, Any]] | None:
        seen = await monitor_versions(running_stack, name)
        return seen if all(seen.get(v, {}).get("labelled") == 40 for v in (1, 2)) else None
    scored = await wait_for(both_scored, 30, "the monitor to count both versions' labels")
    assert scored[1]["rolling_accuracy"] == pytest.approx(accuracy(primary))
    assert scored[2]["rolling_accuracy"] == pytest.approx(accuracy(shadow))
    assert scored[2]["rolling_accuracy"] < 0.3 < 0.8 < scored[1]["rolling_accuracy"]
    aborted = _json(running_stack, "rollout", "abort", name, "--reason", "e2e: done")
    assert aborted["rollout"]["state"] == "ROLLOUT_STATE_ABORTED"


@pytest.mark.timeout(120)
async def test_a_routing_key_always_reaches_the_same_version(running_stack: RunningStack) -> None:
    name = f"sticky-{uuid.uuid4().hex[:8]}"
    model = await create_model(running_stack, name, LEARNER_SPEC, LEARNER_SPEC)
    keys = [f"user-{i}" for i in range(40)]
    _json(running_stack, "deploy", name, "2", "--strategy", "canary", "--steps", "25,50,100",
          "--interval", "10m", "--min-samples", "1000")

    async with Traffic(running_stack, model, seed=5) as traffic:
        await traffic.wait_until_served()

        async def versions_by_key(before: float, weight: float) -> dict[str, int]:
            """Three rounds over every key once the canary has ``weight``: one version per key."""
            moved = next(k for k in keys if before <= key_bucket(k) < weight)
            await wait_for(lambda: _reaches(traffic, moved, 2), 20, f"the canary at {weight:.0%}")
            seen: dict[str, set[int]] = {key: set() for key in keys}
            for _ in range(3):
                for key in keys:
                    (result,) = await traffic.ask([{"x0": 0.1, "x1": 0.2}], routing_key=key)
                    seen[key].add(result.version)
            assert all(len(found) == 1 for found in seen.values()), seen
            return {key: found.pop() for key, found in seen.items()}

        at_25 = await versions_by_key(0.0, 0.25)
        assert at_25 == {k: 2 if key_bucket(k) < 0.25 else 1 for k in keys}
        assert set(at_25.values()) == {1, 2}
        assert running_stack.cli("rollout", "advance", name).returncode == 0
        at_50 = await versions_by_key(0.25, 0.5)
    assert at_50 == {k: 2 if key_bucket(k) < 0.5 else 1 for k in keys}
    assert {k for k, v in at_25.items() if v == 2} < {k for k, v in at_50.items() if v == 2}
    assert running_stack.cli("rollout", "abort", name).returncode == 0


async def _reaches(traffic: Traffic, key: str, version: int) -> bool:
    (result,) = await traffic.ask([{"x0": 0.0, "x1": 0.0}], routing_key=key)
    return result.version == version
