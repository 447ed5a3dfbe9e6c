"""The whole stack, started once for the e2e tests with ``headwater up --detach``.

Every port is free and every path is temporary, so the stack never meets a
developer's own ``headwater up``. Teardown runs ``headwater down`` and checks
that no process the stack started is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from headwater.cli.localstack.ports import free_port, pid_alive, wait_until

# A script, not tests: importing tritonclient here would clash with headwater's protos.
collect_ignore = ["triton_session.py"]

PORT_SETTINGS = (
    "KAFKA_PORT", "POSTGRES_PORT", "REGISTRY_PORT", "GATEWAY_PORT", "GATEWAY_METRICS_PORT",
    "TRAINER_PORT", "MONITOR_PORT", "REGISTRY_METRICS_PORT",
)


@dataclass(frozen=True)
class RunningStack:
    """A stack started by the CLI, and how to talk to it."""

    env: dict[str, str]
    endpoints: dict[str, str]
    pids: dict[str, int]

    def cli(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``headwater ARGS`` against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "headwater.cli", *args], env=self.env, text=True,
            capture_output=True, timeout=timeout_s, check=False,
        )


def _stack_env(state_dir: Path) -> dict[str, str]:
    env = {**os.environ, "HEADWATER_STACK_STATE_DIR": str(state_dir),
           "HEADWATER_STACK_PARTITIONS": "2",
           "HEADWATER_TRAINER_SYNC_INTERVAL_MS": "200",
           "HEADWATER_TRAINER_CHECKPOINT_EVERY_EXAMPLES": "100000",
           "HEADWATER_TELEMETRY_LOG_LEVEL": "INFO"}
    env.update({f"HEADWATER_STACK_{name}": str(free_port()) for name in PORT_SETTINGS})
    return env


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The four services, the broker and PostgreSQL, as ``headwater up --detach`` runs them."""
    state_dir = tmp_path_factory.mktemp("stack")
    env = _stack_env(state_dir)
    env["HEADWATER_REGISTRY_TARGET"] = f"127.0.0.1:{env['HEADWATER_STACK_REGISTRY_PORT']}"
    env["HEADWATER_GATEWAY_TARGET"] = f"127.0.0.1:{env['HEADWATER_STACK_GATEWAY_PORT']}"
    env["HEADWATER_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{env['HEADWATER_STACK_KAFKA_PORT']}"
    up = subprocess.run([sys.executable, "-m", "headwater.cli", "up", "--detach"], env=env,
                        text=True, capture_output=True, timeout=150, check=False)
    state_file = state_dir / "stack.json"
    if up.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for p in sorted(state_dir.rglob("*.log")))
        pytest.fail(f"headwater up failed: {up.stdout}\n{up.stderr}\n{logs}")
    state = json.loads(state_file.read_text())
    stack = RunningStack(env, state["endpoints"], {**state["pids"], "up": state["supervisor_pid"]})
    try:
        yield stack
    finally:
        down = stack.cli("down", timeout_s=60)
        assert down.returncode == 0, down.stderr
        assert wait_until(lambda: not any(pid_alive(p) for p in stack.pids.values()), 15), (
            f"processes left after down: {[n for n, p in stack.pids.items() if pid_alive(p)]}")
