"""The monitor's Faust app: one agent on ``predictions``, one on ``examples``.

The agents read raw bytes (the bus codec decodes them, so protobuf and JSON
both work) and hand every record to :class:`MonitorService`; they hold no logic.

The app runs inside the monitor process (no ``faust worker``): it is built in
the running event loop, started with :meth:`MonitorStreams.start`, and stopped
within a bounded grace. On Tansu it is configured so that Faust never has to
create a topic itself: no leader topic, no tables (so no changelog topics), no
declaration of the source topics (the server creates them first), and no
Faust web server (the monitor serves its own HTTP).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from headwater.services.monitor.service import IncomingRecord, MonitorService
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.bus.topics import Topic, topic_name
from headwater.shared.faust_runner import FaustRunner, faust_brokers

log = logging.getLogger(__name__)

#: Topics the monitor consumes (they must exist before the app starts).
SOURCE_TOPICS: tuple[Topic, ...] = (Topic.PREDICTIONS, Topic.EXAMPLES)


def build_app(settings: MonitorSettings, service: MonitorService, data_dir: Path) -> faust.App:
    """The Faust app with its two agents (call inside the running event loop)."""
    session_s = settings.session_timeout_s
    app = faust.App(
        settings.group_id,
        broker=faust_brokers(settings.kafka.bootstrap),
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_s,
        broker_rebalance_timeout=session_s,
        broker_heartbeat_interval=max(0.1, session_s / 10),
        broker_request_timeout=max(session_s + 5, settings.kafka.request_timeout_ms / 1000),
        producer_acks=-1,
    )
    _agent(app, settings, Topic.PREDICTIONS, service.handle_prediction)
    _agent(app, settings, Topic.EXAMPLES, service.handle_example)
    return app


def _agent(
    app: faust.App,
    settings: MonitorSettings,
    topic: Topic,
    handle: Callable[[IncomingRecord], Awaitable[None]],
) -> None:
    channel = app.topic(
        topic_name(settings.kafka, topic), key_serializer="raw", value_serializer="raw"
    )

    async def consume(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            message = event.message
            await handle(
                IncomingRecord(
                    topic=message.topic,
                    key=message.key,
                    value=message.value,
                    headers=tuple(message.headers or ()),
                )
            )

    app.agent(channel, name=f"{settings.app_id}.{topic.value}")(consume)


class MonitorStreams:
    """Runs the Faust app inside this process: start in the background, bounded stop.

    Args:
        settings: Broker, app id and group timeouts.
        service: Receives every record.
        data_dir: Faust's working directory.

    """

    def __init__(self, settings: MonitorSettings, service: MonitorService, data_dir: Path) -> None:
        self._settings = settings
        self._service = service
        self._data_dir = data_dir
        self._runner = FaustRunner("monitor streams")

    @property
    def ready(self) -> bool:
        """Whether the consumer group has joined and the agents are consuming."""
        return self._runner.ready

    def start(self) -> None:
        """Build the app and start it in the background (the group join takes seconds)."""
        self._runner.launch(build_app(self._settings, self._service, self._data_dir))

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the app has started.

        Raises:
            Unavailable: It did not start within ``timeout_s`` or failed to start.

        """
        await self._runner.wait_ready(timeout_s)

    async def stop(self, grace_s: float) -> None:
        """Stop the agents and the consumer within ``grace_s`` (then give up, logged)."""
        await self._runner.stop(grace_s)
