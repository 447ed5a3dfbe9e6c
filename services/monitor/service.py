"""The monitor's orchestration: raw records in, state updated, alerts and dead letters out.

The stream agents hand every record to :class:`MonitorService` and move on;
nothing here knows about Faust, so an aiokafka loop could drive it as well.
Each record goes through the bus's :class:`RecordPolicy` (a malformed one is
dead-lettered with the reason, one that hits a bug as ``monitor failed:
<ExceptionType>``), inside a span continuing the record's trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.context import Context

from headwater.services.monitor import convert
from headwater.services.monitor.domain import AlertRaised, MonitorSnapshot, MonitorState
from headwater.services.monitor.rollout_controller import RolloutController
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.record_policy import RecordPolicy, Step
from headwater.shared.bus.records import ConsumedRecord, RawRecord, record_headers
from headwater.shared.bus.topics import Topic
from headwater.shared.bus.tracing import extract_trace_context
from headwater.shared.errors import ResourceExhausted, Unavailable
from headwater.shared.pb import events_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class MonitorService:
    """Feeds the monitor's state from records of ``predictions`` and ``examples``.

    Args:
        state: The pure state the records update.
        producer: A started producer for alerts and dead letters.
        clock: Wall-clock seconds (a parameter so tests can move time).
        stopping: True once the monitor shuts down: dead-lettering stops retrying.
        rollouts: The rollout controller, fed what the state accepted (None: none).

    """

    def __init__(
        self,
        state: MonitorState,
        producer: EventProducer,
        clock: Callable[[], float] = time.time,
        stopping: Callable[[], bool] = lambda: False,
        rollouts: RolloutController | None = None,
    ) -> None:
        self.state = state
        self._producer = producer
        self._clock = clock
        self._rollouts = rollouts
        self._policies = {
            topic: RecordPolicy(
                producer, "monitor", stopping=stopping, on_reject=self._counter(topic)
            )
            for topic in (Topic.PREDICTIONS, Topic.EXAMPLES)
        }

    def snapshot(self) -> MonitorSnapshot:
        """The state now (what the exporter and the JSON API read)."""
        return self.state.snapshot()

    async def handle_prediction(self, record: RawRecord) -> None:
        """Count one ``PredictionEvent``; a malformed one goes to dead-letter.

        Raises:
            Unavailable: The monitor stopped before a dead letter was acknowledged
                (do not commit past the record).

        """
        await self._handle(record, Topic.PREDICTIONS, self._predicted)

    async def handle_example(self, record: RawRecord) -> None:
        """Score one ``LabeledExample``; publish the alerts it raises.

        Raises:
            Unavailable: As :meth:`handle_prediction`.

        """
        await self._handle(record, Topic.EXAMPLES, self._labelled)

    async def _predicted(self, record: ConsumedRecord) -> None:
        prediction = convert.prediction_from_proto(record.decode(events_pb2.PredictionEvent))
        self.state.observe_prediction(prediction, self._clock())
        if self._rollouts is not None:
            self._rollouts.observe_prediction(prediction)

    async def _labelled(self, record: ConsumedRecord) -> None:
        example = convert.example_from_proto(record.decode(events_pb2.LabeledExample))
        alerts = self.state.observe_example(example, self._clock())
        if self._rollouts is not None:  # the partition says which replica acts for the model
            self._rollouts.observe_example(example, record.partition)
        for alert in alerts:
            self.publish_alert(alert)

    async def _handle(self, record: RawRecord, topic: Topic, step: Step) -> None:
        with tracer.start_as_current_span(f"monitor.{topic.value}", context=_trace_of(record)):
            await self._policies[topic].handle(record, step)

    def _counter(self, topic: Topic) -> Callable[[ConsumedRecord], None]:
        def count(_: ConsumedRecord) -> None:
            self.state.record_rejected(topic.value)

        return count

    def publish_alert(self, alert: AlertRaised) -> None:
        """Publish an alert to ``alerts`` keyed by model (a full buffer is logged, not raised)."""
        log.warning(
            "alert raised",
            extra={"model": alert.model, "version": alert.version, "kind": alert.kind},
        )
        try:
            self._producer.publish(Topic.ALERTS, alert.model, convert.alert_to_proto(alert))
        except (ResourceExhausted, Unavailable) as err:  # counted by the producer
            log.error("alert not published", extra={"kind": alert.kind, "error": str(err)})


def _trace_of(record: RawRecord) -> Context:
    """The trace context ``record`` carries; none when its headers cannot be read."""
    try:
        return extract_trace_context(record_headers(record.headers))
    except (TypeError, ValueError):  # the policy dead-letters such a record
        return extract_trace_context(None)
