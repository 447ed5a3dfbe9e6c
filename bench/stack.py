"""The processes a benchmark runs: broker, PostgreSQL and services, each stopped by PID.

A :class:`BenchStack` owns every process it starts; :func:`running_stack` starts
one and stops it in a ``finally``, bounded: SIGTERM, a wait, then SIGKILL,
always by PID.
Everything lives in a fresh temporary directory (logs included), removed after
a clean run and kept (its path printed) after a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headwater.cli.localstack import EmbeddedPostgres, TansuBroker, free_port
from headwater.cli.localstack.ports import die_with_parent_hook, stop_child
from headwater.shared.bus.topics import ensure_topics
from headwater.shared.settings import KafkaSettings

SIGNING_KEY = "headwater-bench-signing-key"
PARTITIONS = 2
STOP_WAIT_S = 8.0
KEEP_LOGS = bool(os.environ.get("HEADWATER_BENCH_KEEP_LOGS"))


class BenchStack:
    """Broker, PostgreSQL and service processes of one benchmark run."""

    def __init__(self, name: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"hw-bench-{name}-"))
        self.broker: TansuBroker | None = None
        self.postgres: EmbeddedPostgres | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.failed = False
        self.topic_prefix = "headwater."

    # -- infrastructure -------------------------------------------------------

    def start_broker(self) -> None:
        """Start Tansu (memory storage) as a child that dies with this process."""
        self.broker = TansuBroker(log_path=self.workdir / "tansu.log")
        self.broker.start()

    def start_postgres(self) -> None:
        """Start embedded PostgreSQL with a ``headwater`` database."""
        self.postgres = EmbeddedPostgres(self.workdir / "pg", die_with_parent=True)
        self.postgres.start()
        self.postgres.ensure_database("headwater")

    @property
    def kafka(self) -> KafkaSettings:
        """Settings of the bench broker (``topic_prefix``, PARTITIONS partitions)."""
        assert self.broker is not None, "start_broker() first"
        return KafkaSettings(
            bootstrap=self.broker.bootstrap,
            topic_prefix=self.topic_prefix,
            partitions=PARTITIONS,
            request_timeout_ms=5_000,
        )

    async def create_topics(self) -> None:
        """Create every headwater topic before any client touches one."""
        await ensure_topics(self.kafka)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a service process: broker, database, signing key, quiet logs."""
        env = {
            **os.environ,
            "HEADWATER_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "HEADWATER_KAFKA_PARTITIONS": str(PARTITIONS),
            "HEADWATER_KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "HEADWATER_ARTIFACT_SIGNING_KEY": SIGNING_KEY,
            "HEADWATER_TELEMETRY_LOG_LEVEL": "WARNING",
        }
        if self.postgres is not None:
            env["HEADWATER_DATABASE_URL"] = self.postgres.url("headwater")
        env.update(extra)
        return env

    # -- service processes ----------------------------------------------------

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``python argv...`` as a child that gets SIGTERM when this process dies."""
        with (self.workdir / f"{name}.log").open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, *argv],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent_hook(),
            )
        self.processes[name] = process
        return process

    def spawn_registry(self, name: str = "registry") -> str:
        """Start the registry process; returns its target (wait with :func:`wait_serving`)."""
        port = free_port()
        self.spawn(
            name,
            _service_argv("registry"),
            self.env(
                HEADWATER_REGISTRY_PORT=str(port),
                HEADWATER_REGISTRY_METRICS_PORT="0",
                HEADWATER_REGISTRY_OUTBOX_POLL_INTERVAL_MS="50",
                HEADWATER_REGISTRY_SHUTDOWN_GRACE_S="2",
            ),
        )
        return f"127.0.0.1:{port}"

    def spawn_gateway(
        self, registry: str, name: str = "gateway", profile_to: Path | None = None
    ) -> tuple[str, str]:
        """Start a gateway process; returns its gRPC target and its /metrics URL."""
        port, metrics_port = free_port(), free_port()
        self.spawn(
            name,
            _service_argv("gateway", profile_to),
            self.env(
                HEADWATER_GATEWAY_PORT=str(port),
                HEADWATER_GATEWAY_METRICS_PORT=str(metrics_port),
                HEADWATER_REGISTRY_TARGET=registry,
                HEADWATER_GATEWAY_GATEWAY_ID=f"bench-{name}",
                HEADWATER_GATEWAY_SHUTDOWN_GRACE_S="3",
            ),
        )
        return f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"

    def spawn_trainer(
        self,
        registry: str,
        name: str = "trainer",
        profile_to: Path | None = None,
        **settings: str,
    ) -> str:
        """Start a trainer process; returns its HTTP base URL (wait with :func:`wait_http_ok`).

        ``settings`` are extra ``HEADWATER_TRAINER_<KEY>`` variables (key upper-cased).
        """
        port = free_port()
        extra = {f"HEADWATER_TRAINER_{k.upper()}": v for k, v in settings.items()}
        self.spawn(
            name,
            _service_argv("trainer", profile_to),
            self.env(
                HEADWATER_TRAINER_PORT=str(port),
                HEADWATER_REGISTRY_TARGET=registry,
                HEADWATER_TRAINER_SHUTDOWN_GRACE_S="3",
                **extra,
            ),
        )
        return f"http://127.0.0.1:{port}"

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The last lines of a process's log, for error messages."""
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def pids(self) -> dict[str, int]:
        """PID of every process of the stack that is running."""
        pids = {name: p.pid for name, p in self.processes.items() if p.poll() is None}
        if self.broker is not None and self.broker.pid is not None:
            pids["broker"] = self.broker.pid
        if self.postgres is not None and self.postgres.pid is not None:
            pids["postgres"] = self.postgres.pid
        return pids

    def stop_process(self, name: str, timeout_s: float = STOP_WAIT_S) -> int | None:
        """SIGTERM one service by PID, wait up to ``timeout_s``, then SIGKILL; its exit code."""
        process = self.processes.get(name)
        if process is None:
            return None
        stop_child(process, signal.SIGTERM, timeout_s)
        return process.returncode

    def stop(self) -> None:
        """Stop every service (reverse start order), then the broker and PostgreSQL."""
        for name in reversed(list(self.processes)):
            try:
                self.stop_process(name)
            except Exception as error:  # keep stopping the others
                print(f"bench: could not stop {name}: {error!r}", file=sys.stderr)
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.failed or KEEP_LOGS:
            print(f"bench: logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _service_argv(service: str, profile_to: Path | None = None) -> list[str]:
    """``python`` arguments running a service; under cProfile, writing ``profile_to``, if given.

    >>> _service_argv("trainer", Path("t.prof"))
    ['-m', 'cProfile', '-o', 't.prof', '-m', 'headwater.services.trainer']
    """
    argv = ["-m", f"headwater.services.{service}"]
    return argv if profile_to is None else ["-m", "cProfile", "-o", str(profile_to), *argv]


@contextmanager
def running_stack(name: str, *, postgres: bool = True) -> Iterator[BenchStack]:
    """A :class:`BenchStack` with its broker (and PostgreSQL) started, stopped on exit.

    When the body fails the stack's logs are kept (see :meth:`BenchStack.stop`).
    """
    stack = BenchStack(name)
    try:
        stack.start_broker()
        if postgres:
            stack.start_postgres()
        yield stack
    except BaseException:
        stack.failed = True
        raise
    finally:
        stack.stop()


async def wait_serving(
    stack: BenchStack, name: str, target: str, timeout_s: float = 60.0, service: str = ""
) -> None:
    """Poll ``grpc.health.v1`` until SERVING; fail when the process exits or time runs out."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await _wait_for(stack, name, serving, timeout_s, "not SERVING")


async def wait_http_ok(stack: BenchStack, name: str, url: str, timeout_s: float = 60.0) -> None:
    """Poll ``GET url`` until it answers 200; fail when the process exits or time runs out."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:

        async def healthy() -> bool:
            try:
                async with session.get(url) as reply:
                    return reply.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await _wait_for(stack, name, healthy, timeout_s, "not healthy")


async def _wait_for(
    stack: BenchStack,
    name: str,
    ready: Callable[[], Awaitable[bool]],
    timeout_s: float,
    not_ready: str,
) -> None:
    """Poll ``ready`` every 0.2 s while process ``name`` runs; fail if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        process = stack.processes[name]
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{stack.log_tail(name)}")
        if await ready():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{name} {not_ready} after {timeout_s}s:\n{stack.log_tail(name)}")
