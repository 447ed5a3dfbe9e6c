"""One example record through the learners of its model: each one's step, the record's outcome.

Every learner of the model (one per routed version) takes its own step on the
record (:func:`learn_one`): already consumed, a duplicate id, learned, or
refused (a feature or label that does not fit, River raising). A record some
learner refused is dead-lettered once, with the reasons (:func:`failure_reason`),
before those learners move past it (:func:`learn_record`); the record's outcome
is the most telling of its learners' (:data:`PRECEDENCE`).

>>> failure_reason({2: "bad label", 3: "bad label"}, learners=2)
'bad label'
>>> failure_reason({3: "model cannot learn: ValueError()"}, learners=2)
'version 3: model cannot learn: ValueError()'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from headwater.services.trainer.learn.active import ActiveLearner
from headwater.services.trainer.learn.convert import example_from_proto
from headwater.services.trainer.learn.learner import Position, StepKind
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import InvalidInput
from headwater.shared.pb import events_pb2


class ExampleOutcome(StrEnum):
    """What became of one example record (or what one learner did with it)."""

    LEARNED = "learned"
    DUPLICATE = "duplicate"
    ALREADY_CONSUMED = "already_consumed"
    NOT_DEPLOYED = "not_deployed"
    DEAD_LETTER = "dead_lettered"
    SHADOW_COPY = "shadow_copy"


#: A record's outcome from its learners' ones: the first of these that one of them had.
PRECEDENCE = (
    ExampleOutcome.DEAD_LETTER,
    ExampleOutcome.LEARNED,
    ExampleOutcome.DUPLICATE,
    ExampleOutcome.ALREADY_CONSUMED,
)

#: Dead-letters a record with the reason (the examples loop's ``RecordPolicy.reject``).
RejectExample = Callable[[ConsumedRecord, str], Awaitable[None]]


@dataclass(frozen=True)
class Processed:
    """The outcome of a record, with the reason when it must be dead-lettered.

    Attributes:
        outcome: The record's outcome.
        reason: Why it was dead-lettered (or is not learned).
        learners: What each learner did with it, by version.

    """

    outcome: ExampleOutcome
    reason: str = ""
    learners: tuple[tuple[int, ExampleOutcome], ...] = ()


def failure_reason(failed: Mapping[int, str], learners: int) -> str:
    """Why a record is dead-lettered, from the reasons of the learners (by version) refusing it.

    The reason alone when every learner refused it for the same one, else each
    version with its reason.
    """
    reasons = set(failed.values())
    if len(failed) == learners and len(reasons) == 1:
        return reasons.pop()
    return "; ".join(f"version {version}: {reason}" for version, reason in sorted(failed.items()))


def learn_one(active: ActiveLearner, message: events_pb2.LabeledExample, at: Position) -> Processed:
    """One learner's test-then-train on one example; DEAD_LETTER (with why) if it cannot.

    A refused example leaves the learner as it was: the caller dead-letters the
    record, then moves the learner past it.
    """
    learner = active.learner
    resume_at = learner.next_offset(at.topic, at.partition)
    if resume_at is not None and at.offset < resume_at:
        return Processed(ExampleOutcome.ALREADY_CONSUMED)
    try:
        example = example_from_proto(message, learner.kind, active.loaded.schema)
        step = learner.process(example, at)
    except Exception as err:  # bad example or River refusing it: skip, keep learning
        reason = str(err) if isinstance(err, InvalidInput) else f"model cannot learn: {err!r}"
        return Processed(ExampleOutcome.DEAD_LETTER, reason)
    if step is not StepKind.ALREADY_CONSUMED:
        active.saving.consumed(at)
    return Processed(ExampleOutcome(step.value))


async def learn_record(
    record: ConsumedRecord,
    message: events_pb2.LabeledExample,
    learners: Sequence[ActiveLearner],
    reject: RejectExample,
) -> Processed:
    """Every learner's step on the record (``message`` decoded); dead-letter it if one refused.

    Raises:
        Unavailable: ``reject`` could not reach the dead-letter topic; the
            learners that refused the record have not moved past it.

    """
    at = Position(record.topic, record.partition, record.offset)
    done: dict[int, ExampleOutcome] = {}
    failed: dict[int, str] = {}
    for active in learners:
        step = learn_one(active, message, at)
        if step.outcome is ExampleOutcome.DEAD_LETTER:
            failed[active.learner.base_version] = step.reason
        else:
            done[active.learner.base_version] = step.outcome
    reason = failure_reason(failed, len(learners)) if failed else ""
    if failed:
        await reject(record, reason)
        for active in learners:
            if active.learner.base_version in failed:
                active.learner.skip(at)
                active.saving.consumed(at)
                done[active.learner.base_version] = ExampleOutcome.DEAD_LETTER
    outcome = next(o for o in PRECEDENCE if o in done.values())
    return Processed(outcome, reason, tuple(sorted(done.items())))
