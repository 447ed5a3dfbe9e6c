"""The CLI against a running stack: status, models, versions, aliases, deploy."""

from __future__ import annotations

import json
import time
import uuid

from tests.e2e.conftest import RunningStack

SPEC = '{"pipeline":[{"component":"preprocessing.StandardScaler"},' \
       '{"component":"linear_model.LogisticRegression"}]}'


def _json(stack: RunningStack, *args: str) -> object:
    result = stack.cli(*args, "--output", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_status_reports_every_part_healthy(running_stack: RunningStack) -> None:
    status = _json(running_stack, "status")
    assert status["running"] is True
    assert set(status["parts"]) == {"broker", "postgres", "registry", "gateway", "trainer",
                                    "monitor"}
    assert all(part["healthy"] for part in status["parts"].values())


def test_models_versions_aliases_and_deploy(running_stack: RunningStack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = _json(running_stack, "models", "create", name, "--task", "binary",
                    "-f", "x0:float", "-f", "x1:float:optional", "--tag", "team=risk")
    assert created["name"] == name and created["tags"] == {"team": "risk"}
    version = _json(running_stack, "versions", "create", name, "--spec", SPEC, "--seed", "3")
    assert version["version"] == "1" and version["lineage"]["seed"] == "3"
    assert running_stack.cli("alias", "set", name, "champion", "1").returncode == 0
    shown = _json(running_stack, "models", "show", name)
    assert shown["aliases"] == {"champion": "1"}
    assert _json(running_stack, "versions", "show", name, "champion")["version"] == "1"
    deployed = _json(running_stack, "deploy", name, "1")
    assert deployed["routes"][0]["version"] == "1"
    assert running_stack.cli("alias", "delete", name, "champion").returncode == 0
    assert "aliases" not in _json(running_stack, "models", "show", name)
    listed = _json(running_stack, "models", "list")
    assert name in {m["name"] for m in listed}


def test_unknown_component_is_a_clear_error(running_stack: RunningStack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _json(running_stack, "models", "create", name, "--task", "regression", "-f", "x:float")
    result = running_stack.cli("versions", "create", name, "--spec",
                               '{"component": "os.system"}')
    assert result.returncode == 1
    assert "unknown component 'os.system'" in result.stderr.replace("\n", " ")


def test_unknown_model_is_not_found(running_stack: RunningStack) -> None:
    result = running_stack.cli("models", "show", "no-such-model")
    assert result.returncode == 1
    assert "no-such-model" in result.stderr


def test_predict_feedback_and_checkpoint_from_the_cli(running_stack: RunningStack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _json(running_stack, "models", "create", name, "--task", "binary",
          "-f", "x0:float", "-f", "x1:float")
    _json(running_stack, "versions", "create", name, "--spec", SPEC)
    _json(running_stack, "deploy", name, "1")
    env = {**running_stack.env,
           "HEADWATER_TRAINER_URL": running_stack.endpoints["trainer_http"]}
    stack = RunningStack(env, running_stack.endpoints, running_stack.pids)

    deadline = time.monotonic() + 30
    while (predicted := stack.cli("predict", name, "x0=1.5", "x1=-2", "-o", "json")).returncode:
        assert time.monotonic() < deadline, predicted.stderr
        time.sleep(0.3)
    answer = json.loads(predicted.stdout)
    assert answer["version"] == 1 and len(answer["prediction id"]) == 32

    sent = stack.cli("feedback", answer["prediction id"], "true")
    assert sent.returncode == 0, sent.stderr

    deadline = time.monotonic() + 45
    while (checkpoint := stack.cli("checkpoint", name, "-o", "json")).returncode:
        assert time.monotonic() < deadline, checkpoint.stderr
        time.sleep(0.5)
    version = json.loads(checkpoint.stdout)
    assert version["parent_version"] == 1 and version["example_count"] == 1


def test_predict_with_bad_input_is_a_clear_error(running_stack: RunningStack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _json(running_stack, "models", "create", name, "--task", "binary", "-f", "x0:float")
    not_a_number = running_stack.cli("predict", name, "x0=abc")
    assert not_a_number.returncode == 1
    assert "feature 'x0' must be a float" in not_a_number.stderr
    not_deployed = running_stack.cli("predict", name, "x0=1")
    assert not_deployed.returncode == 1 and "Traceback" not in not_deployed.stderr
    assert name in not_deployed.stderr


def test_a_canary_rollout_from_the_cli(running_stack: RunningStack) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    _json(running_stack, "models", "create", name, "--task", "binary", "-f", "x0:float")
    for _ in range(3):
        _json(running_stack, "versions", "create", name, "--spec", SPEC)
    _json(running_stack, "deploy", name, "1")

    started = _json(running_stack, "deploy", name, "2", "--strategy", "canary", "--steps",
                    "10,50,100", "--interval", "2m", "--max-drop", "0.02", "--reason", "try v2")
    assert started["rollout"]["state"] == "ROLLOUT_STATE_PROGRESSING"
    assert started["rollout"]["policy"]["interval_s"] == 120
    assert [(r["version"], r["weight"]) for r in started["deployment"]["routes"]] == [
        ("1", 0.9), ("2", 0.1)]
    again = running_stack.cli("deploy", name, "3", "--strategy", "shadow")
    assert again.returncode == 1
    assert "already progressing (canary of v2 over v1): promote it, roll it back or abort it" in \
        " ".join(again.stderr.split())
    by_hand = running_stack.cli("deploy", name, "3")
    assert by_hand.returncode == 1 and "abort the rollout first" in " ".join(by_hand.stderr.split())

    assert running_stack.cli("rollout", "advance", name, "--reason", "looks fine").returncode == 0
    assert running_stack.cli("rollout", "pause", name).returncode == 0
    paused = running_stack.cli("rollout", "promote", name)
    assert paused.returncode == 1
    assert "is paused: resume it or roll it back" in " ".join(paused.stderr.split())
    wide = RunningStack({**running_stack.env, "COLUMNS": "200"}, running_stack.endpoints,
                        running_stack.pids)
    status = _json(running_stack, "rollout", "status", name)
    assert status["rollout"]["state"] == "ROLLOUT_STATE_PAUSED" and status["rollout"]["step"] == 1
    table = wide.cli("rollout", "status", name)
    assert table.returncode == 0 and "paused" in table.stdout and "v2 canary 50%" in table.stdout
    stale = running_stack.cli("rollout", "resume", name, "--expect-revision", "2")
    assert stale.returncode == 1 and "at revision 3" in stale.stderr
    assert running_stack.cli("rollout", "resume", name, "--expect-revision", "3").returncode == 0
    promoted = _json(running_stack, "rollout", "promote", name)
    assert promoted["rollout"]["state"] == "ROLLOUT_STATE_PROMOTED"
    assert [r["version"] for r in promoted["deployment"]["routes"]] == ["2"]

    (history,) = _json(running_stack, "rollout", "history", name)
    actions = [t["action"].removeprefix("ROLLOUT_ACTION_") for t in history["transitions"]]
    assert actions == ["START", "ADVANCE", "PAUSE", "RESUME", "PROMOTE"]
    assert history["transitions"][1]["reason"] == "looks fine"
    assert {t["actor"] for t in history["transitions"]} == {"cli"}
    shown = wide.cli("rollout", "history", name)
    assert shown.returncode == 0 and "looks fine" in shown.stdout and "promote" in shown.stdout
    wrong = running_stack.cli("deploy", name, "3", "--steps", "5,100")
    assert wrong.returncode == 2 and "need a --strategy other than direct" in wrong.stderr
