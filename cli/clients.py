"""Thin clients the CLI and the demo use: OIP v2 inference and feedback events.

They build and parse wire messages only; every decision is the services'.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.enums import FEATURE_TYPES
from headwater.shared.errors import InvalidInput, ModelNotFound, Unavailable
from headwater.shared.features import FeatureSchema, target_to_proto
from headwater.shared.grpc_errors import error_for
from headwater.shared.oip_datatypes import preferred_datatype, typed_contents
from headwater.shared.pb import events_pb2, oip_pb2, oip_pb2_grpc, registry_pb2
from headwater.shared.settings import KafkaSettings

Label = bool | int | str | float
#: The OIP request parameter the gateway routes by.
ROUTING_KEY_PARAMETER = "routing_key"


@dataclass(frozen=True)
class InferenceResult:
    """One row's answer from the gateway."""

    prediction_id: str
    version: int
    label: Label | None
    proba: Mapping[str, float]
    live_sequence: int


def parse_value(text: str) -> Label:
    """Read a command-line value: true/false, an integer, a number, else text.

    >>> [parse_value(v) for v in ("true", "3", "2.5", "blue")]
    [True, 3, 2.5, 'blue']
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def build_infer_request(
    model: registry_pb2.Model, rows: Sequence[Mapping[str, Any]], routing_key: str = ""
) -> oip_pb2.ModelInferRequest:
    """One tensor per feature present in the rows, typed by the model's schema.

    A ``routing_key`` becomes the request parameter the gateway routes by (the
    same key reaches the same version while the weights stand); without one the
    gateway routes by the request's fresh ``id``.

    >>> model = registry_pb2.Model(name="m", features=[registry_pb2.Feature(
    ...     name="x", type=registry_pb2.FEATURE_TYPE_FLOAT, required=True)])
    >>> request = build_infer_request(model, [{"x": 1.0}], routing_key="user-7")
    >>> request.parameters["routing_key"].string_param, request.inputs[0].datatype
    ('user-7', 'FP64')

    Raises:
        InvalidInput: a row does not fit the schema (the same check the gateway makes).

    """
    schema = FeatureSchema.from_proto(model)
    rows = [schema.validate_row(row) for row in rows]
    request = oip_pb2.ModelInferRequest(model_name=model.name, id=uuid.uuid4().hex)
    if routing_key:
        request.parameters[ROUTING_KEY_PARAMETER].string_param = routing_key
    for feature in model.features:
        if not any(feature.name in row for row in rows):
            continue
        datatype = preferred_datatype(FEATURE_TYPES[feature.type])
        tensor = request.inputs.add(name=feature.name, datatype=datatype, shape=[len(rows)])
        values = [row.get(feature.name) for row in rows]
        if any(value is None for value in values):
            raise InvalidInput(f"feature {feature.name!r} is set in some rows but not all")
        if datatype == "BYTES":
            values = [str(v).encode() for v in values]
        typed_contents(tensor.contents, datatype).extend(values)
    return request


def parse_infer_response(response: oip_pb2.ModelInferResponse) -> list[InferenceResult]:
    """Rows of a ModelInfer answer: label, probabilities, version, prediction id."""
    outputs = {tensor.name: tensor for tensor in response.outputs}
    labels = _labels(outputs["predict"])
    probas = _probas(outputs.get("predict_proba"), len(labels))
    params = response.parameters
    ids = params["prediction_ids"].string_param.split(",")
    version = params["headwater_version"].int64_param
    live = params["live_sequence"].int64_param if "live_sequence" in params else 0
    return [
        InferenceResult(pid, version, label, proba, live)
        for pid, label, proba in zip(ids, labels, probas, strict=True)
    ]


def _labels(tensor: oip_pb2.ModelInferResponse.InferOutputTensor) -> list[Label | None]:
    values = list(typed_contents(tensor.contents, tensor.datatype))
    if tensor.datatype == "BYTES":
        return [v.decode() or None for v in values]
    return values


def _probas(
    tensor: oip_pb2.ModelInferResponse.InferOutputTensor | None, rows: int
) -> list[dict[str, float]]:
    if tensor is None:
        return [{} for _ in range(rows)]
    classes = [str(c) for c in json.loads(tensor.parameters["classes"].string_param)]
    values = list(tensor.contents.fp64_contents)
    width = len(classes)
    return [dict(zip(classes, values[i * width:(i + 1) * width], strict=True))
            for i in range(rows)]


class InferenceClient:
    """OIP v2 over gRPC to the gateway, with a deadline on every call."""

    def __init__(self, target: str, deadline_s: float = 5.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = oip_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._deadline_s = deadline_s

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def infer(
        self, model: registry_pb2.Model, rows: Sequence[Mapping[str, Any]], routing_key: str = ""
    ) -> list[InferenceResult]:
        """Predict ``rows`` with the version the gateway routes them to (by ``routing_key``)."""
        request = build_infer_request(model, rows, routing_key)
        try:
            response = await self._stub.ModelInfer(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as error:
            raise error_for(error.code(), error.details() or "") from None
        return parse_infer_response(response)


async def request_checkpoint(
    trainer_url: str, model: str, version: int | None = None, deadline_s: float = 15.0
) -> Any:
    """POST the trainer's checkpoint endpoint; the new version's lineage as JSON.

    Args:
        trainer_url: The trainer's HTTP address.
        model: The learner's model.
        version: The learner's (deployed) version; None: the primary route's.
        deadline_s: Longest wait for the answer.

    Raises:
        ModelNotFound: the trainer has no learner for the model (or that version).
        Unavailable: the trainer or the registry could not do it now.

    """
    url = f"{trainer_url.rstrip('/')}/v1/models/{model}/checkpoint"
    params = {} if version is None else {"version": str(version)}
    timeout = aiohttp.ClientTimeout(total=deadline_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, params=params) as reply,
        ):
            body = await reply.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError) as error:
        raise Unavailable(f"trainer at {trainer_url} unreachable: {error}") from None
    if reply.status == 404:
        raise ModelNotFound(body.get("error", f"no learner for model {model!r}"))
    if reply.status != 201:
        raise Unavailable(body.get("error", f"trainer answered {reply.status}"))
    return body


class FeedbackSender:
    """Sends ground truth to the feedback topic, keyed by prediction id."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._producer = EventProducer(kafka, client_id="headwater-cli-feedback")

    async def __aenter__(self) -> FeedbackSender:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop(grace_s=5.0)

    def feedback(self, prediction_id: str, label: Label) -> events_pb2.FeedbackEvent:
        """The FeedbackEvent for one label, stamped now."""
        observed_at = Timestamp()
        observed_at.GetCurrentTime()
        return events_pb2.FeedbackEvent(
            prediction_id=prediction_id, label=target_to_proto(label), observed_at=observed_at
        )

    async def send(self, prediction_id: str, label: Label) -> None:
        """Send one label and wait for the broker's acknowledgement."""
        event = self.feedback(prediction_id, label)
        await self._producer.send_and_wait(Topic.FEEDBACK, prediction_id, event)

    def send_later(self, prediction_id: str, label: Label) -> None:
        """Queue one label without waiting (buffered, retried by the producer)."""
        self._producer.publish(Topic.FEEDBACK, prediction_id, self.feedback(prediction_id, label))
