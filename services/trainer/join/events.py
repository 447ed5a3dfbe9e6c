"""The join's protobuf events: the predictions and feedback it can use, the example a pair makes.

>>> prediction = events_pb2.PredictionEvent(prediction_id="p-1", model="churn", version=3)
>>> prediction.features["age"].int_value = 41
>>> feedback = events_pb2.FeedbackEvent(prediction_id="p-1")
>>> feedback.label.bool_label = True
>>> example = labeled_example(prediction, feedback, now=1_700_000_000.0)
>>> example.example_id, example.model, example.served_version, example.label.bool_label
('p-1', 'churn', 3, True)
"""

from __future__ import annotations

from headwater.services.trainer.timestamps import seconds, timestamp
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2


def labeled_example(
    prediction: events_pb2.PredictionEvent, feedback: events_pb2.FeedbackEvent, now: float
) -> events_pb2.LabeledExample:
    """The example a joined pair makes; its id is the prediction id (so re-joins are duplicates).

    ``labelled_at`` is the feedback's ``observed_at``, or ``now`` when the producer left it out.
    """
    example = events_pb2.LabeledExample(
        example_id=prediction.prediction_id,
        model=prediction.model,
        prediction_id=prediction.prediction_id,
        served_version=prediction.version,
        route_role=prediction.route_role,
    )
    for name, value in prediction.features.items():
        example.features[name].CopyFrom(value)
    example.label.CopyFrom(feedback.label)
    if prediction.HasField("prediction"):
        example.prediction.CopyFrom(prediction.prediction)
    example.proba.update(prediction.proba)
    if prediction.HasField("predicted_at"):
        example.predicted_at.CopyFrom(prediction.predicted_at)
    observed = seconds(feedback.observed_at)
    example.labelled_at.CopyFrom(feedback.observed_at if observed else timestamp(now))
    return example


def check_prediction(event: events_pb2.PredictionEvent) -> events_pb2.PredictionEvent:
    """A prediction the join can use: it has an id and a model.

    Raises:
        InvalidInput: Naming the missing field.

    """
    if not event.prediction_id:
        raise InvalidInput("PredictionEvent has no prediction_id")
    if not event.model:
        raise InvalidInput(f"PredictionEvent {event.prediction_id!r} names no model")
    return event


def check_feedback(event: events_pb2.FeedbackEvent) -> events_pb2.FeedbackEvent:
    """Feedback the join can use: it has a prediction id and a label.

    Raises:
        InvalidInput: Naming the missing field.

    >>> check_feedback(events_pb2.FeedbackEvent(prediction_id="p-1"))
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: FeedbackEvent for 'p-1' has no label

    """
    if not event.prediction_id:
        raise InvalidInput("FeedbackEvent has no prediction_id")
    if event.label.WhichOneof("kind") is None:
        raise InvalidInput(f"FeedbackEvent for {event.prediction_id!r} has no label")
    return event
