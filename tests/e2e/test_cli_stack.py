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
