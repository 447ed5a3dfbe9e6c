"""The registry's composition root: PostgreSQL, migrations, gRPC, outbox relay, metrics.

>>> server = RegistryServer(RegistrySettings(port=0, metrics_port=0))
>>> server.port  # known once started
0
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2

from headwater.services.registry import repository as repo
from headwater.services.registry.gate_service import GateService
from headwater.services.registry.grpc_api import RegistryServicer
from headwater.services.registry.metrics import MetricsInterceptor
from headwater.services.registry.migrate import apply_migrations
from headwater.services.registry.outbox import OutboxRelay
from headwater.services.registry.replica_service import ReplicaService
from headwater.services.registry.rollout_service import RolloutService
from headwater.services.registry.service import RegistryService
from headwater.services.registry.settings import RegistrySettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic, ensure_topics
from headwater.shared.errors import FailedPrecondition, Unavailable
from headwater.shared.grpc_server import (
    MetricsEndpoint,
    message_size_options,
    set_serving_status,
    start_with_health,
)
from headwater.shared.lifecycle import bounded_step
from headwater.shared.pb import registry_pb2, registry_pb2_grpc
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
# Room above the largest artifact for the rest of a message.
MESSAGE_OVERHEAD_BYTES = 1024 * 1024
#: Between two attempts at creating registry-events while the broker is down.
TOPIC_BACKOFF = Backoff(initial_s=0.1, max_s=5.0)
# Past the grace, the time stop() still gives the closing steps (producer, pool, metrics).
STOP_MARGIN_S = 1.0


class RegistryServer:
    """Runs the registry: ``await start()``, then ``await stop(grace_s)``.

    Attributes:
        port: The bound gRPC port (useful when ``settings.port`` is 0).
        service: The use cases, for in-process callers.
        rollouts: The rollout use cases, for in-process callers.
        replicas: The gateway replicas' use cases, for in-process callers.
        gates: The promotion gate use cases, for in-process callers.

    """

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.port = settings.port
        self.service: RegistryService | None = None
        self.rollouts: RolloutService | None = None
        self.replicas: ReplicaService | None = None
        self.gates: GateService | None = None
        self._pool: asyncpg.Pool | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._producer: EventProducer | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._metrics = MetricsEndpoint()

    @property
    def target(self) -> str:
        """host:port clients dial."""
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Connect to PostgreSQL, migrate, serve gRPC, start the relay; SERVING when done.

        On failure everything opened so far is closed again before the error propagates.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop(grace_s=0)
            raise
        log.info("registry serving", extra={"target": self.target})

    async def _start(self) -> None:
        settings = self.settings
        db = settings.database
        self._pool = await asyncpg.create_pool(
            db.url.get_secret_value(),
            min_size=db.pool_min_size,
            max_size=db.pool_max_size,
            command_timeout=db.command_timeout_s,
            timeout=db.command_timeout_s,
            init=repo.init_connection,
        )
        async with self._pool.acquire() as conn:
            await apply_migrations(conn)
        self._producer = EventProducer(settings.kafka, client_id="headwater-registry-outbox")
        relay = OutboxRelay(db.url.get_secret_value(), self._producer, settings)
        self.service = RegistryService(
            self._pool,
            ArtifactCodec.from_settings(settings.artifacts),
            on_commit=relay.wake,
            audit_max_entries=settings.audit_list_max_entries,
        )
        self.gates = GateService(self._pool, on_commit=relay.wake)
        self.rollouts = RolloutService(
            self._pool,
            self.gates,
            on_commit=relay.wake,
            replica_timeout_s=settings.replica_timeout_s,
        )
        self.replicas = ReplicaService(self._pool, settings.replica_timeout_s)
        servicer = RegistryServicer(self.service, self.rollouts, self.replicas, self.gates)
        await self._start_grpc(servicer)
        self._relay_task = asyncio.create_task(self._run_relay(relay), name="registry-outbox")
        self._relay_task.add_done_callback(self._on_relay_done)
        self._metrics.start(settings.host, settings.metrics_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self._relay_task.done():  # died meanwhile: its callback's NOT_SERVING must win
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    async def _start_grpc(self, servicer: RegistryServicer) -> None:
        max_bytes = self.settings.artifacts.max_bytes + MESSAGE_OVERHEAD_BYTES
        server = grpc.aio.server(
            interceptors=[MetricsInterceptor()], options=message_size_options(max_bytes)
        )
        registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)
        self.port = await start_with_health(
            server, self._health, SERVICE_NAME, self.settings.host, self.settings.port
        )
        self._grpc = server

    async def _run_relay(self, relay: OutboxRelay) -> None:
        """Create the topic and start the producer (retrying while the broker is down), relay."""
        assert self._producer is not None
        if self.settings.create_topics:
            await self._ensure_topic()
        await self._producer.start()
        await relay.run()

    async def _ensure_topic(self) -> None:
        """Create registry-events, retrying while the broker is down; keep an existing one."""
        attempt = 0
        while True:
            try:
                await ensure_topics(self.settings.kafka, [Topic.REGISTRY_EVENTS])
                return
            except FailedPrecondition as error:
                # Another partition count than configured: events are keyed by model, so
                # per-model order holds with any count. Use the topic as it is.
                log.error(
                    "registry-events exists with another partition count; using it as it is",
                    extra={"error": str(error)},
                )
                return
            except Unavailable as error:
                log.warning("cannot create registry-events yet", extra={"error": str(error)})
                await asyncio.sleep(TOPIC_BACKOFF.delay_s(attempt))
                attempt += 1

    def _on_relay_done(self, task: asyncio.Task[None]) -> None:
        """The relay never ends by itself: if it does, say so and stop claiming to serve."""
        if task.cancelled():
            return  # stop()
        error = task.exception()
        log.error("outbox relay died; events are no longer published", exc_info=error)
        marking = asyncio.create_task(self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING))
        self._health_tasks.add(marking)
        marking.add_done_callback(self._health_tasks.discard)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        await set_serving_status(self._health, SERVICE_NAME, status)

    async def stop(self, grace_s: float) -> None:
        """Stop taking RPCs, finish in-flight ones within ``grace_s``, stop the relay, close.

        Every step shares one deadline: the whole stop takes at most ``grace_s``
        plus :data:`STOP_MARGIN_S` (in-flight RPCs get what is left of the grace;
        the closing steps what is left of the margin). Safe to call more than
        once, and after a failed start.
        """
        loop = asyncio.get_running_loop()
        grace_end = loop.time() + max(grace_s, 0.0)
        hard_end = grace_end + STOP_MARGIN_S

        def left(until: float) -> float:
            return max(until - loop.time(), 0.0)

        await self._health.enter_graceful_shutdown()
        server, self._grpc = self._grpc, None
        if server is not None:
            await bounded_step(server.stop(left(grace_end)), left(hard_end), "gRPC server")
        relay, self._relay_task = self._relay_task, None
        if relay is not None:
            relay.cancel()
            stopped = asyncio.gather(relay, return_exceptions=True)
            await bounded_step(stopped, left(hard_end), "relay")
        producer, self._producer = self._producer, None
        if producer is not None:
            await bounded_step(producer.stop(left(grace_end)), left(hard_end), "producer")
        pool, self._pool = self._pool, None
        if pool is not None and not await bounded_step(pool.close(), left(hard_end), "pool"):
            pool.terminate()
        await self._metrics.stop(left(hard_end))
        log.info("registry stopped")

