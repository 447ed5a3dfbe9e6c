"""``headwater up`` in the foreground: a crashed service comes back; SIGTERM stops all.

Issue 2: Ctrl-C or SIGTERM stops everything within 10 s with no orphan process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from headwater.cli.localstack.ports import pid_alive, wait_until
from tests.e2e.conftest import _stack_env


def _state(state_dir: Path) -> dict | None:
    path = state_dir / "stack.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_a_crashed_service_restarts_and_sigterm_stops_everything(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    up = subprocess.Popen([sys.executable, "-m", "headwater.cli", "up"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: _state(tmp_path) is not None, 120), "stack never came up"
        pids = _state(tmp_path)["pids"]

        os.kill(pids["monitor"], signal.SIGKILL)
        assert wait_until(lambda: _state(tmp_path)["pids"]["monitor"] != pids["monitor"], 20)
        pids = _state(tmp_path)["pids"]
        assert pid_alive(pids["monitor"])

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=10) == 0
        assert [name for name, pid in pids.items() if pid_alive(pid)] == []
        assert _state(tmp_path) is None
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(timeout=5)
