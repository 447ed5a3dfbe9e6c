"""What the local-stack tests share: a server must never outlive its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from headwater.cli.localstack import wait_until
from headwater.cli.localstack.ports import pid_alive


def assert_dies_with_parent(script: str, timeout_s: float) -> None:
    """Run ``script`` (it starts a server and prints its PID) in a parent, then crash the parent.

    The server must be gone within ``timeout_s`` of the parent's SIGKILL;
    whatever happens, neither outlives the test.
    """
    command = [sys.executable, "-c", textwrap.dedent(script)]
    parent = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.kill()  # SIGKILL: the parent gets no chance to clean up
        parent.wait(timeout=5)
        assert wait_until(lambda: not pid_alive(child), timeout_s)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=5)
        if child is not None and pid_alive(child):
            os.kill(child, signal.SIGKILL)
