"""The monitor's orchestration: raw records in, state updated, alerts and dead letters out.

The stream agents hand every record to :class:`MonitorService` and move on;
nothing here knows about Faust, so an aiokafka loop could drive it as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from opentelemetry import trace

from headwater.services.monitor import convert
from headwater.services.monitor.domain import AlertRaised, MonitorSnapshot, MonitorState
from headwater.shared.bus.codec import decode_event
from headwater.shared.bus.dead_letter import dead_letter_reliably
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.bus.tracing import extract_trace_context
from headwater.shared.errors import InvalidInput, ResourceExhausted, Unavailable
from headwater.shared.pb import events_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

@dataclass(frozen=True)
class IncomingRecord:
    """One record as consumed: broker-side topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class MonitorService:
    """Feeds the monitor's state from records of ``predictions`` and ``examples``.

    Args:
        state: The pure state the records update.
        producer: A started producer for alerts and dead letters.
        clock: Wall-clock seconds (a parameter so tests can move time).
        stopping: True once the monitor shuts down: dead-lettering stops retrying.

    """

    def __init__(
        self,
        state: MonitorState,
        producer: EventProducer,
        clock: Callable[[], float] = time.time,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.state = state
        self._producer = producer
        self._clock = clock
        self._stopping = stopping

    def snapshot(self) -> MonitorSnapshot:
        """The state now (what the exporter and the JSON API read)."""
        return self.state.snapshot()

    async def handle_prediction(self, record: IncomingRecord) -> None:
        """Count one ``PredictionEvent``; a malformed one goes to dead-letter."""
        await self._handle(record, Topic.PREDICTIONS, events_pb2.PredictionEvent, self._predicted)

    async def handle_example(self, record: IncomingRecord) -> None:
        """Score one ``LabeledExample``; publish the alerts it raises."""
        await self._handle(record, Topic.EXAMPLES, events_pb2.LabeledExample, self._labelled)

    def _predicted(self, event: Message) -> tuple[AlertRaised, ...]:
        assert isinstance(event, events_pb2.PredictionEvent)
        self.state.observe_prediction(convert.prediction_from_proto(event), self._clock())
        return ()

    def _labelled(self, event: Message) -> tuple[AlertRaised, ...]:
        assert isinstance(event, events_pb2.LabeledExample)
        return self.state.observe_example(convert.example_from_proto(event), self._clock())

    async def _handle(
        self,
        record: IncomingRecord,
        topic: Topic,
        cls: type[Message],
        apply: Callable[[Message], tuple[AlertRaised, ...]],
    ) -> None:
        context = extract_trace_context(record.headers)
        with tracer.start_as_current_span(f"monitor.{topic.value}", context=context):
            try:
                alerts = apply(decode_event(cls, record.value, record.headers))
            except InvalidInput as err:
                await self._reject(record, topic, str(err))
                return
            except Exception as err:  # a bug must not stop the stream: keep the bytes, say why
                log.exception("monitor failed on a record", extra={"topic": record.topic})
                await self._reject(record, topic, f"monitor failed: {type(err).__name__}")
                return
            for alert in alerts:
                self._publish_alert(alert)

    def _publish_alert(self, alert: AlertRaised) -> None:
        log.warning(
            "alert raised",
            extra={"model": alert.model, "version": alert.version, "kind": alert.kind},
        )
        try:
            self._producer.publish(Topic.ALERTS, alert.model, convert.alert_to_proto(alert))
        except (ResourceExhausted, Unavailable) as err:  # counted by the producer
            log.error("alert not published", extra={"kind": alert.kind, "error": str(err)})

    async def _reject(self, record: IncomingRecord, topic: Topic, reason: str) -> None:
        """Dead-letter the record, retrying until the broker acknowledges it.

        When the monitor stops first, Unavailable propagates and the offset is not committed.
        """
        self.state.record_rejected(topic.value)
        await dead_letter_reliably(
            self._producer, record.key, record.value, reason, record.topic,
            headers=record.headers, stopping=self._stopping,
        )
