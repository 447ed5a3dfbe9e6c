"""The trainer's composition root: topics, producer, registry client, join, learners, HTTP.

The learners' evaluations go to the registry from their own background task
(:mod:`.learn.reporter`), stopped after the learners so their last checkpoints'
evaluations still go out.

>>> server = TrainerServer(TrainerSettings(port=0))
>>> server.http_port  # known once started
0
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from headwater.services.trainer.http_api import build_web_app
from headwater.services.trainer.join.streams import JoinStreams
from headwater.services.trainer.learn.consumer import LearningLoop, RegistryEventsTail
from headwater.services.trainer.learn.pool import LearnerPool
from headwater.services.trainer.learn.reporter import EvaluationReporter
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic, ensure_topics, topic_name
from headwater.shared.errors import Unavailable
from headwater.shared.http import HttpEndpoint, WorkDir
from headwater.shared.registry_client import RegistryClient

log = logging.getLogger(__name__)

#: Every topic the trainer reads or writes; created (idempotently) before anything touches it.
TRAINER_TOPICS: tuple[Topic, ...] = (
    Topic.PREDICTIONS,
    Topic.FEEDBACK,
    Topic.EXAMPLES,
    Topic.MODEL_UPDATES,
    Topic.REGISTRY_EVENTS,
    Topic.DEAD_LETTER,
)
#: Least time each shutdown step gets, even when the grace is spent.
MIN_STEP_S = 0.5
#: Largest request of the trainer's producer (model states ride in ModelUpdates).
MAX_REQUEST_BYTES = 16 * 1024 * 1024


class TrainerServer:
    """Runs the trainer: ``await start()``, ``await wait_ready()``, then ``await stop(grace_s)``.

    Attributes:
        http_port: The bound HTTP port (useful when ``settings.port`` is 0).
        pool: The learners, for in-process readers (None before start).
        join: The join's Faust app runner (None before start).

    """

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.http_port = settings.port
        self.pool: LearnerPool | None = None
        self.join: JoinStreams | None = None
        self.learning: LearningLoop | None = None
        self._producer: EventProducer | None = None
        self._registry: RegistryClient | None = None
        self._index: UpdateIndex | None = None
        self._events: RegistryEventsTail | None = None
        self._reporter: EvaluationReporter | None = None
        self._http = HttpEndpoint("trainer")
        self._work_dir: WorkDir | None = None

    @property
    def ready(self) -> bool:
        """Whether the join and the learners consume (``/health`` says serving)."""
        return bool(self.join and self.join.ready and self.learning and self.learning.ready)

    async def start(self) -> None:
        """Create the topics, connect, start HTTP, then the consumers (groups join in background).

        Raises:
            Unavailable: The broker did not answer while creating the topics.
            FailedPrecondition: ``predictions`` and ``feedback`` differ in partition count.

        """
        try:
            await self._start()
        except BaseException:
            await self.stop(grace_s=1.0)
            raise
        log.info("trainer started", extra={"http_port": self.http_port})

    async def _start(self) -> None:
        settings = self.settings
        counts = await ensure_topics(settings.kafka, TRAINER_TOPICS)
        partitions = counts[topic_name(settings.kafka, Topic.PREDICTIONS)]
        self._producer = EventProducer(
            settings.kafka,
            client_id=f"{settings.app_id}-producer",
            max_request_size=MAX_REQUEST_BYTES,
        )
        await self._producer.start()
        self._registry = RegistryClient(
            settings.registry.target, settings.registry.deadline_s, actor="trainer"
        )
        await self._start_http()
        codec = ArtifactCodec.from_settings(settings.artifacts)
        self._index = UpdateIndex(
            settings.kafka, f"{settings.app_id}-model-updates", codec, self._producer
        )
        await self._index.start()
        self.pool = LearnerPool(settings, self._registry, codec, self._index)
        self._reporter = EvaluationReporter(settings, self._registry, self.pool)
        self._reporter.start()
        self._events = RegistryEventsTail(settings, self.pool)
        await self._events.start()
        self.learning = LearningLoop(settings, self.pool, self._producer, self._index)
        await self.learning.start()
        self.join = JoinStreams(settings, partitions, self._prepare_data_dir(), self._producer)
        await self.join.start()

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until the join and the learners consume (group joins take seconds).

        Raises:
            Unavailable: Not ready within ``timeout_s`` (``settings.start_timeout_s`` if None).

        """
        assert self.join is not None and self.learning is not None, "start() first"
        timeout = timeout_s or self.settings.start_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.join.wait_ready(timeout)
        try:
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                await self.learning.assigned.wait()
        except TimeoutError:
            raise Unavailable(f"the learners' group did not join within {timeout}s") from None

    async def stop(self, grace_s: float) -> None:
        """Stop the join, save every learner, close connections and HTTP; bounded by ``grace_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s

        def left() -> float:
            return max(MIN_STEP_S, deadline - loop.time())

        if self.join is not None:
            await self.join.stop(left())
        if self.learning is not None:
            await self.learning.stop(left())
        if self._reporter is not None:  # after the learners' last checkpoints
            await self._reporter.stop(left())
            self._reporter = None
        for closing in (self._events, self._index):
            if closing is not None:
                await closing.stop()
        self._events = self._index = None
        if self._producer is not None:
            await self._producer.stop(left())
            self._producer = None
        if self._registry is not None:
            await self._registry.close()
            self._registry = None
        await self._http.stop(left())
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    async def _start_http(self) -> None:
        app = build_web_app(
            lambda: self.pool, lambda: self.ready, self.settings.registry.deadline_s
        )
        self.http_port = await self._http.start(app, self.settings.host, self.settings.port)

    def _prepare_data_dir(self) -> Path:
        self._work_dir = WorkDir(self.settings.data_dir, prefix="headwater-trainer-")
        return self._work_dir.path
