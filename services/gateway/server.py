"""The gateway's composition root: gRPC, registry client, consumers, producer, metrics.

Start-up order matters for never missing a deployment change:

1. open the registry-events consumer at the end offsets (no group: every
   replica sees every event);
2. list the registry's models and deployments and load them;
3. read the compacted model-updates topic up to where it was (bounded wait);
4. report SERVING (``grpc.health.v1``, OIP ServerReady).

From the start the replica heartbeats to the registry every ``heartbeat_s``
(:mod:`.heartbeat`): what it has loaded, and in return what a rolling rollout
wants it to answer with.

The gRPC port answers from the start (ServerLive; NOT_SERVING until step 4).
When the broker is unreachable at start, the deployments are loaded anyway so
the gateway serves, and they are listed again once the consumer is open.

Build a :class:`GatewayServer` inside the event loop that runs it: its registry
client's gRPC channel binds to the loop it is created on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from headwater.services.gateway.grpc_api import SERVICE_NAME, InferenceServicer, add_to_server
from headwater.services.gateway.heartbeat import ReplicaHeartbeat
from headwater.services.gateway.live_updates import LiveUpdater
from headwater.services.gateway.loader import ModelLoader
from headwater.services.gateway.model_cache import ModelCache
from headwater.services.gateway.service import InferenceService
from headwater.services.gateway.settings import GatewaySettings
from headwater.services.gateway.streams import (
    AssignedStream,
    ModelUpdateHandler,
    RegistryEventHandler,
)
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.record_policy import RecordPolicy
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import Unavailable
from headwater.shared.grpc_server import (
    MetricsEndpoint,
    message_size_options,
    set_serving_status,
    start_with_health,
)
from headwater.shared.lifecycle import bounded_step
from headwater.shared.registry_client import RegistryClient
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: Between two attempts at opening a consumer or listing the deployments at start-up.
START_BACKOFF = Backoff(initial_s=0.1, max_s=5.0, jitter=0.5)
#: How far past its grace ``stop`` may run (closing steps after the grace).
STOP_MARGIN_S = 1.0
#: Least time the prediction-event flush gets, even when in-flight RPCs used the grace.
MIN_FLUSH_S = 0.25
# The producer's stop counts unsent events after its flush; leave it time to get there.
_COUNT_RESERVE_S = 0.2


def model_health_name(model: str) -> str:
    """The ``grpc.health.v1`` service name of one model.

    >>> model_health_name("churn")
    'inference.GRPCInferenceService/churn'
    """
    return f"{SERVICE_NAME}/{model}"


class GatewayServer:
    """Runs the gateway: ``await start()``, then ``await stop(grace_s)``.

    Attributes:
        port: The bound gRPC port (useful when ``settings.port`` is 0).
        cache: The deployed models.
        service: The inference use case.
        producer: The PredictionEvent producer.
        heartbeat: Reports this replica to the registry and applies its rolling assignments.
        ready: Set once the deployed models are loaded (health SERVING).

    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.port = settings.port
        self.ready = asyncio.Event()
        self.cache = ModelCache(unload_grace_s=settings.unload_grace_s)
        codec = ArtifactCodec.from_settings(settings.artifacts)
        self.updater = LiveUpdater(self.cache, codec)
        self.producer = EventProducer(settings.kafka, client_id=f"gateway-{settings.gateway_id}")
        self.registry = RegistryClient(
            settings.registry.target,
            settings.registry.deadline_s,
            actor=f"gateway-{settings.gateway_id}",
            max_message_bytes=settings.artifacts.max_bytes + 1024 * 1024,
        )
        self.loader = ModelLoader(
            self.registry,
            codec,
            self.cache,
            self.updater,
            retry_max_s=settings.reload_retry_max_s,
            on_change=self._model_changed,
        )
        self.service = InferenceService(
            self.cache,
            self.producer,
            settings.gateway_id,
            settings.max_batch_rows,
            settings.shadow_queue_max_requests,
        )
        self.heartbeat = ReplicaHeartbeat(
            self.cache,
            self.registry,
            settings.replica_name,
            address=lambda: settings.address(self.port),
            interval_s=settings.heartbeat_s,
        )
        self.registry_events, self.model_updates = self._streams()
        self._health = health.aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics = MetricsEndpoint()
        self._stopped = False

    def _streams(self) -> tuple[AssignedStream, AssignedStream]:
        policy = RecordPolicy(self.producer, "gateway", stopping=lambda: self._stopped)
        client = f"gateway-{self.settings.gateway_id}"
        registry_events = AssignedStream(
            self.settings.kafka,
            Topic.REGISTRY_EVENTS,
            f"{client}-registry-events",
            RegistryEventHandler(self.cache, self.loader, policy),
            from_beginning=False,
        )
        model_updates = AssignedStream(
            self.settings.kafka,
            Topic.MODEL_UPDATES,
            f"{client}-model-updates",
            ModelUpdateHandler(self.updater, policy),
            from_beginning=True,
        )
        return registry_events, model_updates

    @property
    def target(self) -> str:
        """host:port clients dial."""
        return f"{self.settings.host}:{self.port}"

    async def start(self) -> None:
        """Serve gRPC, then load the deployments; returns once SERVING or start-up timed out."""
        await self.producer.start()
        await set_serving_status(self._health, SERVICE_NAME, NOT_SERVING)
        await self._start_grpc()
        self._metrics.start(self.settings.host, self.settings.metrics_port)
        self._tasks.append(asyncio.create_task(self._bootstrap(), name="gateway-bootstrap"))
        self._spawn(self._unload_retired(), "gateway-unload")
        self._spawn(self.heartbeat.run(), "gateway-heartbeat")
        try:
            await asyncio.wait_for(self.ready.wait(), self.settings.startup_timeout_s)
        except TimeoutError:
            log.warning(
                "gateway not ready yet; still loading in the background",
                extra={"timeout_s": self.settings.startup_timeout_s},
            )
        log.info("gateway listening", extra={"target": self.target, "ready": self.ready.is_set()})

    async def _start_grpc(self) -> None:
        settings = self.settings
        server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=message_size_options(settings.max_message_bytes),
        )
        add_to_server(InferenceServicer(self.service, self.ready.is_set), server)
        self.port = await start_with_health(
            server, self._health, SERVICE_NAME, settings.host, settings.port
        )
        self._grpc = server

    async def _bootstrap(self) -> None:
        """Steps 1-4 of the module docstring, each retried until it succeeds."""
        await self._open(self.registry_events, load_while_waiting=True)
        await self._load_all()
        self._spawn(self.registry_events.run(), "gateway-registry-events")
        await self._open(self.model_updates, load_while_waiting=False)
        self._spawn(self.model_updates.run(), "gateway-model-updates")
        try:
            await asyncio.wait_for(
                self.model_updates.caught_up.wait(), self.settings.live_catchup_timeout_s
            )
        except TimeoutError:
            log.warning("model-updates not caught up in time; serving anyway")
        await self._set_ready()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _open(self, stream: AssignedStream, load_while_waiting: bool) -> None:
        attempt = 0
        while True:
            try:
                await stream.open()
                return
            except Unavailable as error:
                log.warning(
                    "broker unreachable; retrying",
                    extra={"topic": stream.topic.value, "error": str(error)},
                )
            if load_while_waiting and attempt == 0:
                await self._load_all()  # serve from the registry while the broker is down
                await self._set_ready()
            attempt += 1
            await asyncio.sleep(START_BACKOFF.delay_s(attempt))

    async def _load_all(self) -> None:
        attempt = 0
        while True:
            try:
                count = await self.loader.load_all()
                log.info("deployments loaded", extra={"models": count})
                return
            except Exception as error:
                attempt += 1
                log.warning("cannot list deployments yet", extra={"error": repr(error)})
                await asyncio.sleep(START_BACKOFF.delay_s(attempt))

    async def _set_ready(self) -> None:
        if self.ready.is_set():
            return
        await set_serving_status(self._health, SERVICE_NAME, SERVING)
        self.ready.set()
        log.info("gateway serving", extra={"models": [e.name for e in self.cache.entries()]})

    async def _model_changed(self, name: str) -> None:
        entry = self.cache.find(name)
        status = SERVING if entry is not None and entry.routes.answering else NOT_SERVING
        await self._health.set(model_health_name(name), status)

    async def _unload_retired(self) -> None:
        """Unload the versions no longer routed once their grace is over."""
        interval_s = min(max(self.settings.unload_grace_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval_s)
            for model, version in self.cache.sweep():
                log.info("version unloaded", extra={"model": model, "version": version})

    async def stop(self, grace_s: float) -> None:
        """Stop accepting RPCs, finish in-flight ones, flush events, close; within the grace.

        Every step shares one deadline: the whole stop takes at most ``grace_s``
        plus :data:`STOP_MARGIN_S`. In-flight RPCs get what is left of the
        grace, the event flush what is left then (at least :data:`MIN_FLUSH_S`,
        and always ending early enough that events still buffered are counted
        as failed rather than lost), the closing steps what is left of the margin.
        Idempotent: a second call returns at once.
        """
        if self._stopped:
            return
        self._stopped = True
        loop = asyncio.get_running_loop()
        grace_end = loop.time() + max(grace_s, 0.0)
        hard_end = grace_end + STOP_MARGIN_S

        def left(until: float) -> float:
            return max(until - loop.time(), 0.0)

        await bounded_step(self._health.enter_graceful_shutdown(), left(hard_end), "health")
        if self._grpc is not None:
            await bounded_step(self._grpc.stop(left(grace_end)), left(hard_end), "gRPC server")
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await bounded_step(asyncio.gather(*tasks, return_exceptions=True), left(hard_end), "tasks")
        # queued mirrors may finish within the grace; the rest are dropped and counted
        await bounded_step(self.service.shadows.join(), left(grace_end), "shadows")
        await bounded_step(self.service.shadows.close(), left(hard_end), "shadows")
        await bounded_step(self.loader.close(), left(hard_end), "model loads")
        flush_s = min(max(left(grace_end), MIN_FLUSH_S), left(hard_end) - _COUNT_RESERVE_S)
        await bounded_step(self.producer.stop(max(flush_s, 0.0)), left(hard_end), "producer")
        for stream in (self.registry_events, self.model_updates):
            await bounded_step(stream.close(), left(hard_end), f"{stream.topic.value} consumer")
        await bounded_step(self.registry.close(), left(hard_end), "registry client")
        await self._metrics.stop(left(hard_end))
        log.info("gateway stopped", extra={"events_dropped": self.service.events_dropped})

