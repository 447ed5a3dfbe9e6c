"""The monitor's composition root: topics, producer, HTTP, the rollout controller, Faust streams.

>>> server = MonitorServer(MonitorSettings(metrics_port=0))
>>> server.http_port  # known once started
0
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from headwater.services.monitor.domain import MonitorSnapshot, MonitorState
from headwater.services.monitor.exporter import monitor_registry
from headwater.services.monitor.http_api import build_web_app
from headwater.services.monitor.rollout_controller import RolloutController, RolloutsSnapshot
from headwater.services.monitor.rollout_driver import RolloutDriver
from headwater.services.monitor.service import MonitorService
from headwater.services.monitor.settings import MonitorSettings
from headwater.services.monitor.streams import SOURCE_TOPICS, MonitorStreams
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic, ensure_topics
from headwater.shared.http import HttpEndpoint, WorkDir
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)

#: Every topic the monitor reads or writes; created (idempotently) before anything touches it.
MONITOR_TOPICS: tuple[Topic, ...] = (
    *SOURCE_TOPICS,
    Topic.REGISTRY_EVENTS,
    Topic.ALERTS,
    Topic.DEAD_LETTER,
)
#: Least time each shutdown step gets, even when the grace is spent.
MIN_STEP_S = 0.5


class MonitorServer:
    """Runs the monitor: ``await start()``, ``await wait_ready()``, then ``await stop(grace_s)``.

    Args:
        settings: The monitor's settings.
        clock: Wall-clock seconds for the state (tests move time with it).

    Attributes:
        http_port: The bound HTTP port (useful when ``settings.metrics_port`` is 0).
        state: The monitor's metrics, for in-process readers.
        rollouts: The rollout controller's core, for in-process readers.

    """

    def __init__(self, settings: MonitorSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.http_port = settings.metrics_port
        self.state = MonitorState(settings.monitor_config())
        self.rollouts = RolloutController(blocked_retry_s=settings.rollout_blocked_retry_s)
        self._clock = clock
        self._producer: EventProducer | None = None
        self._registry: RegistryClient | None = None
        self._driver: RolloutDriver | None = None
        self._streams: MonitorStreams | None = None
        self._http = HttpEndpoint("monitor")
        self._work_dir: WorkDir | None = None
        self._stopping = False

    def snapshot(self) -> MonitorSnapshot:
        """The monitor's metrics now."""
        return self.state.snapshot()

    def rollouts_snapshot(self) -> RolloutsSnapshot:
        """The rollouts the controller tracks, and its accepted decisions, now."""
        return self.rollouts.snapshot(self._examples_partitions())

    @property
    def ready(self) -> bool:
        """Whether the streams consume (``/health`` says serving)."""
        return self._streams is not None and self._streams.ready

    async def start(self) -> None:
        """Create the topics; start the producer, HTTP, the rollout controller, then the streams.

        The streams start in the background (the group join takes seconds);
        the controller reads registry-events from its end before anything asks
        the registry for a rollout, so no change falls between the two.

        Raises:
            Unavailable: The broker did not answer while creating the topics.

        """
        settings = self.settings
        await ensure_topics(settings.kafka, MONITOR_TOPICS)
        self._producer = EventProducer(settings.kafka, client_id=f"{settings.app_id}-producer")
        await self._producer.start()
        try:
            await self._start_http()
            service = MonitorService(
                self.state,
                self._producer,
                self._clock,
                stopping=lambda: self._stopping,
                rollouts=self.rollouts,
            )
            await self._start_driver(service)
            self._streams = MonitorStreams(settings, service, self._prepare_data_dir())
            self._streams.start()
        except BaseException:
            await self.stop(grace_s=1.0)
            raise
        log.info(
            "monitor started",
            extra={"http_port": self.http_port, "app_id": settings.app_id},
        )

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until the streams consume (the first group join takes seconds).

        Raises:
            Unavailable: Not ready within ``timeout_s`` (``settings.start_timeout_s`` if None).

        """
        assert self._streams is not None, "start() first"
        await self._streams.wait_ready(timeout_s or self.settings.start_timeout_s)

    async def stop(self, grace_s: float) -> None:
        """Stop consuming, flush alerts and dead letters, close HTTP; bounded by ``grace_s``."""
        self._stopping = True
        deadline = asyncio.get_running_loop().time() + grace_s

        def left() -> float:
            return max(MIN_STEP_S, deadline - asyncio.get_running_loop().time())

        if self._driver is not None:
            await self._driver.stop(left())
            self._driver = None
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        if self._streams is not None:
            await self._streams.stop(left())
            self._streams = None
        if self._producer is not None:
            await self._producer.stop(left())
            self._producer = None
        await self._http.stop(left())
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    async def _start_http(self) -> None:
        app = build_web_app(
            self.snapshot,
            monitor_registry(self.snapshot, self.rollouts_snapshot),
            lambda: self.ready,
            self.rollouts_snapshot,
        )
        self.http_port = await self._http.start(app, self.settings.host, self.settings.metrics_port)

    async def _start_driver(self, service: MonitorService) -> None:
        registry = self.settings.registry
        self._registry = RegistryClient(registry.target, registry.deadline_s, actor="monitor")
        self._driver = RolloutDriver(
            self.settings,
            self.rollouts,
            self._registry,
            service.publish_alert,
            self._examples_partitions,
            self._clock,
        )
        await self._driver.start()

    def _examples_partitions(self) -> frozenset[int]:
        """The ``examples`` partitions this replica holds (it acts for their models)."""
        streams = self._streams
        return streams.assigned_partitions(Topic.EXAMPLES) if streams is not None else frozenset()

    def _prepare_data_dir(self) -> Path:
        self._work_dir = WorkDir(self.settings.data_dir, prefix="headwater-monitor-")
        return self._work_dir.path
