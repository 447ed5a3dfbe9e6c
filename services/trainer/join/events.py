"""The join's protobuf events: the predictions and feedback it can use, the example a pair makes.

>>> prediction = events_pb2.PredictionEvent(prediction_id="p-1", model="churn", version=3)
>>> prediction.features["age"].int_value = 41
>>> feedback = events_pb2.FeedbackEvent(prediction_id="p-1")
>>> feedback.label.bool_label = True
>>> example = labeled_example(prediction, feedback, now=1_700_000_000.0)
>>> example.example_id, example.model, example.served_version, example.label.bool_label
('p-1', 'churn', 3, True)

A shadow prediction's example is scored with the same label and names the answer:

>>> shadow = events_pb2.PredictionEvent(prediction_id="p-1~v4", model="churn", version=4)
>>> shadow.route_role, shadow.answered_prediction_id = SHADOW, "p-1"
>>> is_shadow(check_prediction(shadow))
True
>>> example = labeled_example(shadow, feedback, now=1_700_000_000.0)
>>> example.example_id, example.served_version, example.answered_prediction_id
('p-1~v4', 4, 'p-1')
"""

from __future__ import annotations

from headwater.services.trainer.timestamps import seconds, timestamp
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2, registry_pb2

#: The route role of a shadow prediction.
SHADOW = registry_pb2.ROUTE_ROLE_SHADOW


def labeled_example(
    prediction: events_pb2.PredictionEvent, feedback: events_pb2.FeedbackEvent, now: float
) -> events_pb2.LabeledExample:
    """The example a joined pair makes; its id is the prediction id (so re-joins are duplicates).

    ``labelled_at`` is the feedback's ``observed_at``, or ``now`` when the producer left it out.
    A shadow prediction's example keeps its role and names the answered prediction.
    """
    example = events_pb2.LabeledExample(
        example_id=prediction.prediction_id,
        model=prediction.model,
        prediction_id=prediction.prediction_id,
        served_version=prediction.version,
        route_role=prediction.route_role,
        answered_prediction_id=prediction.answered_prediction_id,
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
    """A prediction the join can use: it has an id and a model, and a shadow names its answer.

    A prediction names an answered prediction if and only if it is a shadow
    (route role SHADOW), and never itself.

    Raises:
        InvalidInput: Naming the missing field or the contradiction.

    >>> unnamed = events_pb2.PredictionEvent(prediction_id="s", model="m", route_role=SHADOW)
    >>> check_prediction(unnamed)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: shadow PredictionEvent 's' has no answered_predicti...
    >>> named = events_pb2.PredictionEvent(prediction_id="p", model="m", answered_prediction_id="a")
    >>> check_prediction(named)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: PredictionEvent 'p' names answered prediction 'a' but ...

    """
    if not event.prediction_id:
        raise InvalidInput("PredictionEvent has no prediction_id")
    if not event.model:
        raise InvalidInput(f"PredictionEvent {event.prediction_id!r} names no model")
    if is_shadow(event):
        _check_shadow(event)
    elif event.answered_prediction_id:
        raise InvalidInput(
            f"PredictionEvent {event.prediction_id!r} names answered prediction "
            f"{event.answered_prediction_id!r} but its route role is {_role_name(event)}: "
            "only a shadow prediction (route role SHADOW) names one"
        )
    return event


def _check_shadow(event: events_pb2.PredictionEvent) -> None:
    if not event.answered_prediction_id:
        raise InvalidInput(
            f"shadow PredictionEvent {event.prediction_id!r} has no answered_prediction_id: "
            "a shadow prediction names the prediction that answered its request"
        )
    if event.answered_prediction_id == event.prediction_id:
        raise InvalidInput(
            f"shadow PredictionEvent {event.prediction_id!r} names itself as the answered "
            "prediction: a shadow prediction has an id of its own"
        )


def is_shadow(event: events_pb2.PredictionEvent) -> bool:
    """Whether a prediction is a shadow's (it mirrors a request another version answered)."""
    return event.route_role == SHADOW


def _role_name(event: events_pb2.PredictionEvent) -> str:
    try:
        return registry_pb2.RouteRole.Name(event.route_role)
    except ValueError:
        return str(event.route_role)


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
