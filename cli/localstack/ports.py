"""Free ports, bounded polling and the process helpers both servers share."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` has passed.

    Returns:
        Whether the predicate became true in time.

    >>> wait_until(lambda: True, timeout_s=0.1)
    True
    >>> wait_until(lambda: False, timeout_s=0.05, interval_s=0.01)
    False

    """
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this PID exists (zombies of our own children excluded)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def pid_gone(pid: int) -> bool:
    """Whether no process, not even a zombie awaiting its reaper, has this PID."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to one process, ignoring one that is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_child(child: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float) -> None:
    """Stop a child process: ``sig``, then SIGKILL when it has not exited within ``timeout_s``.

    By PID only; a child that has already exited is only reaped.
    """
    if child.poll() is None:
        signal_pid(child.pid, sig)
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_pid(child.pid, signal.SIGKILL)
        child.wait(timeout=5.0)


def die_with_parent_hook(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``sig`` when its parent dies.

    Linux delivers the signal when the *thread* that forked exits, so the hook
    is only returned on the main thread (elsewhere the child would die with a
    worker thread); on other platforms there is none. Python runs the hook
    after switching to ``user=``, so the setting survives that switch (which
    would clear it).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None or not hasattr(os, "getppid"):
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook
