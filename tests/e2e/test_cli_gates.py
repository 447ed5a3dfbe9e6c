"""The CLI's promotion gates against a running stack: set, show, evaluations, refusals."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from headwater.shared.registry_client import RegistryClient
from tests.e2e.conftest import RunningStack

SPEC = '{"component": "linear_model.LogisticRegression"}'
#: Evaluations are stamped a little ahead (within the registry's 5-minute skew), so a
#: learner reporting meanwhile (stamped now) never replaces the ones a test records.
AHEAD = dt.timedelta(minutes=4)


def _json(stack: RunningStack, *args: str) -> object:
    result = stack.cli(*args, "--output", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _flat(text: str) -> str:
    return " ".join(text.split())


async def _record(stack: RunningStack, model: str, accuracy: float, seconds: int) -> None:
    async with RegistryClient(stack.env["HEADWATER_REGISTRY_TARGET"], actor="test") as client:
        at = dt.datetime.now(dt.UTC) + AHEAD + dt.timedelta(seconds=seconds)
        await client.record_evaluation(model, 2, "trainer", "accuracy", accuracy,
                                       examples=1200, at=at)  # fmt: skip


async def test_gates_refuse_a_rollout_and_say_by_how_much(running_stack: RunningStack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _json(running_stack, "models", "create", name, "--task", "binary", "-f", "x0:float")
    for _ in range(2):
        _json(running_stack, "versions", "create", name, "--spec", SPEC)
    _json(running_stack, "deploy", name, "1")
    defaults = _json(running_stack, "gates", "show", name)
    assert defaults == {"model": name, "require_schema_compatible": True}

    stored = _json(running_stack, "gates", "set", name, "--min-score", "accuracy=0.85",
                   "--min-examples", "500", "--max-warmup-latency-ms", "250")
    assert stored["min_score"] == {"metric": "accuracy", "threshold": 0.85}
    assert (stored["min_examples"], stored["revision"], stored["updated_by"]) == ("500", "1", "cli")
    assert stored["max_warmup_latency_ms"] == 250
    wide = RunningStack({**running_stack.env, "COLUMNS": "200"}, running_stack.endpoints,
                        running_stack.pids)
    table = wide.cli("gates", "show", name)
    assert table.returncode == 0 and "accuracy=0.85" in table.stdout and "enforced" in table.stdout
    bad = running_stack.cli("gates", "set", name, "--min-score", "accuracy")
    assert bad.returncode == 2 and "METRIC=THRESHOLD" in bad.stderr

    await _record(running_stack, name, 0.81, 0)
    refused = running_stack.cli("deploy", name, "2", "--strategy", "canary")
    assert refused.returncode == 1
    assert (f"version 2 of '{name}' cannot start a canary rollout: gate min_score failed: "
            "accuracy 0.81 < 0.85 required (short by 0.04) over 1200 examples") in \
        _flat(refused.stderr)
    assert "gate max_warmup_latency_ms failed: no warm-up latency of version 2" in \
        _flat(refused.stderr)
    (evaluation,) = _json(running_stack, "versions", "evaluations", name, "2")
    assert (evaluation["metric"], evaluation["value"], evaluation["examples"]) == (
        "accuracy", 0.81, "1200")
    listed = wide.cli("versions", "evaluations", name, "2")
    assert listed.returncode == 0 and "0.81" in listed.stdout and "trainer" in listed.stdout

    _json(running_stack, "gates", "set", name, "--min-score", "accuracy=0.85")
    await _record(running_stack, name, 0.9, 1)
    started = _json(running_stack, "deploy", name, "2", "--strategy", "canary")
    assert started["rollout"]["state"] == "ROLLOUT_STATE_PROGRESSING"
    await _record(running_stack, name, 0.8, 2)
    not_yet = running_stack.cli("rollout", "promote", name)
    assert not_yet.returncode == 1
    assert "cannot be promoted: gate min_score failed: accuracy 0.8 < 0.85 required (short by " \
        "0.05)" in _flat(not_yet.stderr)

    _json(running_stack, "gates", "set", name, "--no-schema-check")
    promoted = _json(running_stack, "rollout", "promote", name)
    assert promoted["rollout"]["state"] == "ROLLOUT_STATE_PROMOTED"
