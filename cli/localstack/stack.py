"""The embedded local stack: broker, PostgreSQL and the four services as child processes.

``headwater up`` builds a :class:`LocalStack` from :class:`StackSettings`,
starts every part in dependency order, waits until each health check passes,
and writes ``stack.json`` (endpoints and PIDs) into the state directory so
that ``headwater status`` and ``headwater down`` can find it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headwater.cli.localstack import health
from headwater.cli.localstack.broker import TansuBroker
from headwater.cli.localstack.ports import die_with_parent_hook
from headwater.cli.localstack.postgres import EmbeddedPostgres
from headwater.shared.bus.topics import ensure_topics
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)

SERVICES = ("registry", "gateway", "trainer", "monitor")
STATE_FILE = "stack.json"


class StackSettings(BaseSettings):
    """Where the local stack keeps its data and which ports it uses."""

    model_config = SettingsConfigDict(env_prefix="HEADWATER_STACK_", frozen=True)

    state_dir: Path = Field(Path(".headwater"), description="Data, logs and stack.json.")
    kafka_port: int = Field(9092, description="Broker port on 127.0.0.1.")
    postgres_port: int = Field(5433, description="PostgreSQL port on 127.0.0.1.")
    registry_port: int = Field(50051, description="Registry gRPC port.")
    gateway_port: int = Field(8001, description="Gateway OIP v2 gRPC port.")
    gateway_metrics_port: int = Field(9101, description="Gateway Prometheus port.")
    trainer_port: int = Field(9102, description="Trainer HTTP port (health, metrics).")
    monitor_port: int = Field(9100, description="Monitor HTTP port (metrics, JSON, health).")
    registry_metrics_port: int = Field(9103, description="Registry Prometheus port.")
    partitions: int = Field(4, ge=1, description="Partitions of each topic.")
    start_timeout_s: float = Field(60.0, gt=0, description="Longest wait for a healthy stack.")
    stop_timeout_s: float = Field(
        9.0, gt=0, description="Longest a whole stop takes: services, then broker and PostgreSQL."
    )
    service_grace_s: float = Field(
        4.0, ge=0, description="Shutdown grace each service gets (its SHUTDOWN_GRACE_S)."
    )
    max_restarts: int = Field(
        3, ge=0, description="Times `headwater up` restarts a service that crashed."
    )


@dataclass(frozen=True)
class Endpoints:
    """Where each part of a running stack answers."""

    kafka_bootstrap: str
    database_url: str
    registry: str
    gateway: str
    trainer_http: str
    monitor_http: str


@dataclass
class StackState:
    """What ``stack.json`` holds: endpoints and the PIDs to stop."""

    endpoints: Endpoints
    supervisor_pid: int
    pids: dict[str, int] = field(default_factory=dict)

    def save(self, state_dir: Path) -> None:
        """Write the state file atomically."""
        tmp = state_dir / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(state_dir / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        """Read the state file, or None when no stack was started here."""
        path = state_dir / STATE_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(Endpoints(**raw["endpoints"]), raw["supervisor_pid"], raw["pids"])


def endpoints_for(settings: StackSettings) -> Endpoints:
    """The endpoints a stack with these settings exposes."""
    host = "127.0.0.1"
    return Endpoints(
        kafka_bootstrap=f"{host}:{settings.kafka_port}",
        database_url=f"postgresql://postgres@{host}:{settings.postgres_port}/headwater",
        registry=f"{host}:{settings.registry_port}",
        gateway=f"{host}:{settings.gateway_port}",
        trainer_http=f"http://{host}:{settings.trainer_port}",
        monitor_http=f"http://{host}:{settings.monitor_port}",
    )


def service_environment(settings: StackSettings, endpoints: Endpoints) -> dict[str, str]:
    """Environment variables that point every service at the local stack."""
    return {
        "HEADWATER_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
        "HEADWATER_KAFKA_PARTITIONS": str(settings.partitions),
        "HEADWATER_DATABASE_URL": endpoints.database_url,
        "HEADWATER_REGISTRY_PORT": str(settings.registry_port),
        "HEADWATER_REGISTRY_METRICS_PORT": str(settings.registry_metrics_port),
        "HEADWATER_REGISTRY_TARGET": endpoints.registry,
        "HEADWATER_GATEWAY_PORT": str(settings.gateway_port),
        "HEADWATER_GATEWAY_METRICS_PORT": str(settings.gateway_metrics_port),
        "HEADWATER_TRAINER_PORT": str(settings.trainer_port),
        "HEADWATER_MONITOR_METRICS_PORT": str(settings.monitor_port),
        **{f"HEADWATER_{name.upper()}_SHUTDOWN_GRACE_S": str(settings.service_grace_s)
           for name in SERVICES},
    }


class LocalStack:
    """Start and stop the whole embedded stack from one process."""

    def __init__(self, settings: StackSettings, extra_env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self.state_dir = settings.state_dir.resolve()
        self.endpoints = endpoints_for(settings)
        self.broker = TansuBroker(port=settings.kafka_port, log_path=self._log("broker"))
        self.postgres = EmbeddedPostgres(self.state_dir / "postgres", port=settings.postgres_port)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}

    def _log(self, name: str) -> Path:
        path = self.state_dir / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    async def start(self) -> StackState:
        """Start every part and wait until all are healthy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # On the main thread, not in a worker: the children's parent-death signal
        # fires when the thread that forked them exits.
        self.broker.start()
        self.postgres.start()
        self.postgres.ensure_database("headwater")
        kafka = KafkaSettings(
            bootstrap=self.endpoints.kafka_bootstrap, partitions=self.settings.partitions
        )
        await ensure_topics(kafka)
        self._spawn("registry")
        await self._wait_healthy("registry")
        for name in SERVICES[1:]:
            self._spawn(name)
        await asyncio.gather(*(self._wait_healthy(name) for name in SERVICES[1:]))
        state = StackState(self.endpoints, os.getpid(), self.pids())
        state.save(self.state_dir)
        return state

    def pids(self) -> dict[str, int]:
        """PID of every process the stack started."""
        pids = {name: process.pid for name, process in self.processes.items()}
        pids["broker"] = self.broker.pid or 0
        pids["postgres"] = self.postgres.pid or 0
        return pids

    def _spawn(self, name: str) -> None:
        env = {**os.environ, **service_environment(self.settings, self.endpoints), **self.extra_env}
        with self._log(name).open("ab") as log_file:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", f"headwater.services.{name}"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent_hook(),
            )
        log.info("started %s (pid %d)", name, self.processes[name].pid)

    async def _wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see {self._log(name)}"
                )
            if await health.check(name, self.endpoints):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"{name} not healthy after {self.settings.start_timeout_s} s; see {self._log(name)}"
        )

    def restart_crashed(self) -> list[str]:
        """Restart services that exited on their own (up to ``max_restarts`` each)."""
        restarted = []
        for name, process in list(self.processes.items()):
            if process.poll() is None or self.restarts.get(name, 0) >= self.settings.max_restarts:
                continue
            log.warning("%s exited with code %s; restarting", name, process.returncode)
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self._spawn(name)
            restarted.append(name)
        return restarted

    def stop(self) -> None:
        """Stop everything within ``stop_timeout_s``.

        Services go first (they flush to the broker), then the broker and PostgreSQL
        together; whatever outlives its share of the time is killed.
        """
        deadline = time.monotonic() + self.settings.stop_timeout_s
        servers_s = 2.0  # kept for the broker and PostgreSQL at the end
        running = [p for p in reversed(list(self.processes.values())) if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - servers_s - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=1)
        left_s = max(0.5, deadline - time.monotonic())
        with ThreadPoolExecutor(max_workers=2) as pool:
            pool.submit(self.broker.stop, left_s / 2)
            pool.submit(self.postgres.stop, left_s / 2)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
