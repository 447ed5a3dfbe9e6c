"""The inference use case: validate, route, predict, answer, publish.

:meth:`InferenceService.infer` answers one OIP ``ModelInferRequest``. River's
``predict_proba_one``/``predict_one`` are synchronous and fast, so rows are
predicted inline on the event loop. One ``PredictionEvent`` per row is handed
to the producer's bounded buffer, which never blocks; when the buffer is full
the answer still goes out and the dropped events are counted and logged.
A request is all or nothing: every event of it is built before any is
published, so a request refused with an error has published nothing.

The route is chosen by the request's routing key (:func:`routing_key`), so a
key stays on its version while the weights stand; every event carries the
answering version, its route role and the key's hash. A request its key
mirrors to shadow routes is queued for them once its answer is built
(:mod:`headwater.services.gateway.shadow`): a shadow's event for a row has the
id ``"{answered id}~v{shadow version}"``, role SHADOW, the answered row's id as
``answered_prediction_id`` and as its record key, so the row's one label joins
both in the trainer (predictions and feedback share key and partition).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.context import Context

from headwater.services.gateway import metrics
from headwater.services.gateway.model_cache import ModelCache, ModelEntry, ServedVersion
from headwater.services.gateway.outputs import Prediction, encode_outputs, select_outputs
from headwater.services.gateway.routing import (
    CHALLENGER,
    SHADOW,
    Route,
    RouteChoice,
    role_name,
    routing_key,
    routing_key_hash,
)
from headwater.services.gateway.shadow import ShadowQueue, shadow_prediction_id
from headwater.services.gateway.tensors import Row, decode_rows, parse_version
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import (
    InvalidInput,
    ModelNotFound,
    ResourceExhausted,
    Unavailable,
)
from headwater.shared.features import features_to_proto, target_to_proto
from headwater.shared.grpc_errors import status_for
from headwater.shared.pb import events_pb2, oip_pb2

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

PARAM_VERSION = "headwater_version"
PARAM_PREDICTION_IDS = "prediction_ids"
PARAM_LIVE_SEQUENCE = "live_sequence"
PARAM_ROUTE_ROLE = "headwater_route_role"
_DROP_LOG_INTERVAL_S = 5.0


class Publisher(Protocol):
    """What the service needs of the event producer (``EventProducer`` fits)."""

    def publish(
        self,
        topic: Topic,
        key: str | bytes | None,
        message: Message,
        headers: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Buffer one event; raise ResourceExhausted when the buffer is full."""


@dataclass(frozen=True)
class Served:
    """The rows of one request as predicted by one route.

    Attributes:
        key_hash: The routing key's hash (every event of the request carries it).
        answered_prediction_ids: For a shadow, the ids of the answered rows, in row order.

    """

    entry: ModelEntry
    route: Route
    version: ServedVersion
    rows: list[Row]
    predictions: list[Prediction]
    prediction_ids: list[str]
    request_id: str
    latency_ms: float
    key_hash: str = ""
    answered_prediction_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShadowRequest:
    """An answered request waiting for its shadow routes to predict it."""

    answered: Served
    routes: tuple[Route, ...]


class InferenceService:
    """Answers ModelInfer requests from the models in a :class:`ModelCache`.

    Args:
        cache: The deployed models.
        publisher: Where PredictionEvents go.
        gateway_id: Names this replica in the events.
        max_batch_rows: The largest batch a request may carry.
        shadow_queue_max_requests: How many answered requests may wait for their shadows.

    Attributes:
        events_dropped: PredictionEvents the producer refused (buffer full or stopping).
        shadows: The queue of requests waiting for their shadow predictions.

    """

    def __init__(
        self,
        cache: ModelCache,
        publisher: Publisher,
        gateway_id: str,
        max_batch_rows: int,
        shadow_queue_max_requests: int = 1000,
    ) -> None:
        self.cache = cache
        self.publisher = publisher
        self.gateway_id = gateway_id
        self.max_batch_rows = max_batch_rows
        self.events_dropped = 0
        self.shadows: ShadowQueue[ShadowRequest] = ShadowQueue(
            shadow_queue_max_requests, self._shadow
        )
        self._last_drop_log = 0.0

    async def infer(
        self, request: oip_pb2.ModelInferRequest, context: Context | None = None
    ) -> oip_pb2.ModelInferResponse:
        """Answer one request (see the module docstring).

        Args:
            request: The OIP request.
            context: Trace context of the caller, to parent this request's span on.

        Raises:
            ModelNotFound: No such model, or the version asked for is not deployed
                (the message lists the deployed versions).
            ModelNotReady: The model is not deployed (or not loaded yet).
            InvalidInput: The inputs or requested outputs are wrong (message names them).
            FailedPrecondition: A binary model predicted a label that is not a bool.

        """
        started = time.perf_counter()
        name = request.model_name
        version_label = ""
        with tracer.start_as_current_span("ModelInfer", context=context) as span:
            span.set_attribute("headwater.model", name)
            try:
                served, shadows, outputs, raw = self._serve(request, started)
                version_label = str(served.version.version)
                response = _response(request, served, outputs, raw)
                events = self._events(served)  # every event is built before any is published
                self._publish(served, events)
                if shadows:  # off the request path; a full queue drops the mirror, not the answer
                    self.shadows.offer(ShadowRequest(served, shadows), served.entry.name)
            except Exception as error:
                self._count(name, version_label, status_for(error).name, started)
                raise
        self._count(name, version_label, "OK", started)
        return response

    def _serve(
        self, request: oip_pb2.ModelInferRequest, started: float
    ) -> tuple[Served, tuple[Route, ...], tuple[str, ...], bool]:
        entry = self.cache.get(request.model_name)
        outputs = select_outputs((o.name for o in request.outputs), entry.classifier)
        rows = decode_rows(request, entry.schema, self.max_batch_rows)
        choice = _choose(entry, request.model_version, routing_key(request))
        version = entry.versions[choice.answer.version]
        predictions = [predict(version.estimator, row, entry.classifier) for row in rows]
        served = Served(
            entry=entry,
            route=choice.answer,
            version=version,
            rows=rows,
            predictions=predictions,
            prediction_ids=[uuid.uuid4().hex for _ in rows],
            request_id=request.id,
            latency_ms=(time.perf_counter() - started) * 1000,
            key_hash=choice.key_hash,
        )
        return served, choice.shadows, outputs, bool(request.raw_input_contents)

    def _shadow(self, job: ShadowRequest) -> None:
        """Predict an answered request with each of its shadow routes and publish (the worker)."""
        answered = job.answered
        for route in job.routes:
            # the entry the answer used: its versions stay loaded as long as it is referenced
            version = answered.entry.versions[route.version]
            try:
                self._publish_shadow(answered, route, version)
            except Exception:  # one shadow failing must not keep the others from running
                log.exception(
                    "shadow prediction failed",
                    extra={"model": answered.entry.name, "version": route.version},
                )

    def _publish_shadow(self, answered: Served, route: Route, version: ServedVersion) -> None:
        started = time.perf_counter()
        classifier = answered.entry.classifier
        rows = [dict(row) for row in answered.rows]  # a model must not touch the answer's rows
        answered_ids = tuple(answered.prediction_ids)
        served = Served(
            entry=answered.entry,
            route=route,
            version=version,
            rows=answered.rows,
            predictions=[predict(version.estimator, row, classifier) for row in rows],
            prediction_ids=[shadow_prediction_id(p, route.version) for p in answered_ids],
            request_id=answered.request_id,
            latency_ms=(time.perf_counter() - started) * 1000,
            key_hash=answered.key_hash,
            answered_prediction_ids=answered_ids,
        )
        self._publish(served, self._events(served))

    def _events(self, served: Served) -> list[events_pb2.PredictionEvent]:
        """The PredictionEvent of every row; raises before anything is published."""
        now = Timestamp()
        now.GetCurrentTime()
        return [
            prediction_event(served, index, now, self.gateway_id)
            for index in range(len(served.prediction_ids))
        ]

    def _publish(self, served: Served, events: list[events_pb2.PredictionEvent]) -> None:
        name = served.entry.name
        role = role_name(served.route.role)
        metrics.ROWS.labels(model=name, version=str(served.version.version), role=role).inc(
            len(served.rows)
        )
        for index, event in enumerate(events):
            try:
                self.publisher.publish(Topic.PREDICTIONS, prediction_key(event), event)
            except (ResourceExhausted, Unavailable) as error:
                self._dropped(name, len(events) - index, error)
                return
        metrics.EVENTS_PUBLISHED.labels(model=name).inc(len(events))

    def _dropped(self, model: str, count: int, error: Exception) -> None:
        self.events_dropped += count
        reason = "buffer_full" if isinstance(error, ResourceExhausted) else "stopping"
        metrics.EVENTS_DROPPED.labels(model=model, reason=reason).inc(count)
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.error(
                "prediction events dropped",
                extra={"model": model, "dropped_total": self.events_dropped, "reason": str(error)},
            )

    def _count(self, name: str, version: str, code: str, started: float) -> None:
        model = name if self.cache.is_known(name) else metrics.UNKNOWN_MODEL
        metrics.REQUESTS.labels(model=model, version=version, code=code).inc()
        if code == "OK":
            elapsed = time.perf_counter() - started
            metrics.LATENCY_SECONDS.labels(model=model, version=version).observe(elapsed)


def prediction_key(event: events_pb2.PredictionEvent) -> str:
    """The record key of a PredictionEvent: the answered prediction's id (a shadow's too).

    >>> prediction_key(events_pb2.PredictionEvent(prediction_id="a~v3", answered_prediction_id="a"))
    'a'
    """
    return event.answered_prediction_id or event.prediction_id


def _choose(entry: ModelEntry, model_version: str, key: str) -> RouteChoice:
    """The route answering a request: by weight, or the version the caller asked for.

    A shadow's version asked for by name answers as a challenger: its events are
    answered predictions (learned and scored like any other); only the mirrored
    copies carry the SHADOW role.
    """
    if not model_version:
        return entry.routes.choose(key)
    version = parse_version(model_version)
    route = entry.routes.route_for(version)
    if route is None:  # not retryable: NOT_FOUND, not UNAVAILABLE
        deployed = ", ".join(str(v) for v in entry.routes.versions)
        raise ModelNotFound(
            f"version {version} of model '{entry.name}' is not deployed (deployed: {deployed})"
        )
    if route.role == SHADOW:
        route = Route(route.version, 0.0, CHALLENGER)
    return RouteChoice(answer=route, shadows=(), key_hash=routing_key_hash(key))


def predict(estimator: Any, row: Row, classifier: bool) -> Prediction:
    """Predict one row.

    For a classifier the label is the most probable class, which is how
    River's ``Classifier.predict_one`` defines it, so one call gives both.

    >>> from river import linear_model
    >>> model = linear_model.LogisticRegression()
    >>> model.learn_one({"x": 1.0}, True)
    >>> predict(model, {"x": 1.0}, classifier=True).label
    True
    """
    if not classifier:
        return Prediction(estimator.predict_one(row))
    proba = estimator.predict_proba_one(row)
    label = max(proba, key=proba.get) if proba else None
    return Prediction(label, proba)


def prediction_event(
    served: Served, index: int, now: Timestamp, gateway_id: str
) -> events_pb2.PredictionEvent:
    """The PredictionEvent of one row."""
    prediction = served.predictions[index]
    event = events_pb2.PredictionEvent(
        prediction_id=served.prediction_ids[index],
        model=served.entry.name,
        version=served.version.version,
        features=features_to_proto(served.rows[index]),
        proba={str(label): float(p) for label, p in (prediction.proba or {}).items()},
        latency_ms=served.latency_ms,
        predicted_at=now,
        route_role=served.route.role,  # type: ignore[arg-type]
        live_sequence=served.version.live_sequence,
        gateway_id=gateway_id,
        request_id=served.request_id,
        routing_key_hash=served.key_hash,
        answered_prediction_id=(
            served.answered_prediction_ids[index] if served.answered_prediction_ids else ""
        ),
    )
    if prediction.label is not None:
        try:
            event.prediction.CopyFrom(target_to_proto(prediction.label))
        except InvalidInput:  # e.g. a NaN regression output: leave the target unset
            pass
    return event


def _response(
    request: oip_pb2.ModelInferRequest, served: Served, outputs: tuple[str, ...], raw: bool
) -> oip_pb2.ModelInferResponse:
    encoded = encode_outputs(outputs, served.predictions, raw, served.entry.predict_datatype)
    response = oip_pb2.ModelInferResponse(
        model_name=served.entry.name,
        model_version=str(served.version.version),
        id=request.id,
        outputs=encoded.tensors,
        raw_output_contents=encoded.raw,
    )
    response.parameters[PARAM_VERSION].int64_param = served.version.version
    response.parameters[PARAM_PREDICTION_IDS].string_param = ",".join(served.prediction_ids)
    response.parameters[PARAM_LIVE_SEQUENCE].int64_param = served.version.live_sequence
    response.parameters[PARAM_ROUTE_ROLE].string_param = role_name(served.route.role)
    return response
