"""The monitor's Faust app: one agent on ``predictions``, one on ``examples``.

The agents read raw bytes (the bus codec decodes them, so protobuf and JSON
both work) and hand every record to :class:`MonitorService`; they hold no logic.

The app runs inside the monitor process (no ``faust worker``): it is built in
the running event loop, started with :meth:`MonitorStreams.start`, and stopped
within a bounded grace. It is a :func:`~headwater.shared.bus.faust_app.faust_app`
(no topic declared: the server creates the source topics first) with no
tables, so no changelog topics either.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

from headwater.services.monitor.service import MonitorService
from headwater.services.monitor.settings import MonitorSettings
from headwater.shared.bus.faust_app import faust_app
from headwater.shared.bus.records import RawRecord
from headwater.shared.bus.topics import Topic, topic_name
from headwater.shared.faust_runner import FaustRunner

log = logging.getLogger(__name__)

#: Topics the monitor consumes (they must exist before the app starts).
SOURCE_TOPICS: tuple[Topic, ...] = (Topic.PREDICTIONS, Topic.EXAMPLES)


def build_app(settings: MonitorSettings, service: MonitorService, data_dir: Path) -> faust.App:
    """The Faust app with its two agents (call inside the running event loop)."""
    app = faust_app(
        settings.group_id,
        settings.kafka,
        data_dir,
        session_timeout_s=settings.session_timeout_s,
        from_beginning=True,
    )
    _agent(app, settings, Topic.PREDICTIONS, service.handle_prediction)
    _agent(app, settings, Topic.EXAMPLES, service.handle_example)
    return app


def _agent(
    app: faust.App,
    settings: MonitorSettings,
    topic: Topic,
    handle: Callable[[RawRecord], Awaitable[None]],
) -> None:
    channel = app.topic(
        topic_name(settings.kafka, topic), key_serializer="raw", value_serializer="raw"
    )

    async def consume(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            await handle(event.message)

    app.agent(channel, name=f"{settings.app_id}.{topic.value}")(consume)


class MonitorStreams(FaustRunner):
    """The monitor's Faust app run inside this process: background start, bounded stop.

    Readiness, the wait for it and the bounded stop are the :class:`FaustRunner`'s.

    Args:
        settings: Broker, app id and group timeouts.
        service: Receives every record.
        data_dir: Faust's working directory.

    """

    def __init__(self, settings: MonitorSettings, service: MonitorService, data_dir: Path) -> None:
        super().__init__("monitor streams")
        self._settings = settings
        self._service = service
        self._data_dir = data_dir

    def assigned_partitions(self, topic: Topic) -> frozenset[int]:
        """The partitions of ``topic`` this replica's group member holds (none before ready).

        The rollout controller acts for a model only while this holds the
        partition of the model's ``examples``.
        """
        app = self.app
        if app is None or not self.ready:
            return frozenset()
        name = topic_name(self._settings.kafka, topic)
        return frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic == name)

    def start(self) -> None:
        """Build the app and start it in the background (the group join takes seconds)."""
        self.launch(build_app(self._settings, self._service, self._data_dir))
