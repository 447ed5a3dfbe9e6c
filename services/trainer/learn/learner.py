"""The online learner of one deployed version: test-then-train in offset order, exactly once.

Pure apart from the River model it drives: no I/O, no clock. The runtime
(:mod:`headwater.services.trainer.learn.consumer`) feeds it the examples of its model
with their ``(topic, partition, offset)`` positions; the learner

* skips a position it has already consumed (at-least-once redelivery after a
  restart), and an example id it has recently learned (a duplicate written
  twice to the log);
* otherwise predicts first, scores the prediction (progressive validation), then
  learns — exactly what ``river.evaluate.progressive_val_score`` does;
* records, per topic-partition, the inclusive ranges of offsets it consumed since
  its base version: the lineage that lets anyone rebuild the model by replay. A
  learner restored from its save opens a new range when it resumes past a gap
  (its route was gone meanwhile, so the examples in the gap are not in it).

Its bookkeeping (:class:`Progress`) is saved with its state in a ModelUpdate
(:mod:`headwater.services.trainer.learn.updates`), so a restarted learner continues
where the saved one stopped.

>>> from river import linear_model
>>> learner = Learner("m", "classifier", base_version=1, model=linear_model.LogisticRegression())
>>> learner.process(Example("e1", {"x": 1.0}, True), Position("ex", 0, 10))
<StepKind.LEARNED: 'learned'>
>>> learner.process(Example("e1", {"x": 1.0}, True), Position("ex", 0, 11))
<StepKind.DUPLICATE: 'duplicate'>
>>> learner.process(Example("e2", {"x": 1.0}, True), Position("ex", 0, 10))
<StepKind.ALREADY_CONSUMED: 'already_consumed'>
>>> learner.progress().offsets
(OffsetSpan(topic='ex', partition=0, first=10, last=11),)
>>> learner.progress().examples_learned, learner.next_offset("ex", 0)
(1, 12)
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from headwater.shared.errors import InvalidInput
from headwater.shared.quality import QualityMetric, RollingQuality

Value = float | int | str | bool
LearnerKind = Literal["classifier", "regressor"]

DEFAULT_DEDUPE_IDS = 1_000
DEFAULT_METRIC_WINDOW = 1_000
_ID_DIGEST_BYTES = 8


@dataclass(frozen=True)
class Example:
    """A labelled example as the learner sees it.

    Attributes:
        example_id: Unique per example; duplicates of it are learned once.
        features: Feature name to value.
        label: The ground truth.
        labelled_at: When the label was observed (seconds since the epoch), if known.

    """

    example_id: str
    features: Mapping[str, Value]
    label: Value
    labelled_at: float | None = None


@dataclass(frozen=True, order=True)
class Position:
    """Where an example sits in the log."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class OffsetSpan:
    """An inclusive range of offsets of one topic-partition (a lineage ``OffsetRange``)."""

    topic: str
    partition: int
    first: int
    last: int


class StepKind(StrEnum):
    """What the learner did with one example."""

    LEARNED = "learned"
    DUPLICATE = "duplicate"
    ALREADY_CONSUMED = "already_consumed"


@dataclass(frozen=True)
class Progress:
    """Everything a learner knows besides its River model, as plain values.

    Attributes:
        base_version: Registry version the learner started from.
        examples_learned: Examples learned since the base version.
        duplicates: Examples skipped because their id was recently learned.
        scored: Predictions scored by the progressive metric.
        score_total: Sum of per-example scores (1/0 correct, or absolute error).
        window: The last per-example scores (rolling metric), oldest first.
        recent_ids: Digests of the most recently learned example ids, oldest first.
        offsets: Consumed offset ranges since the base version (the lineage), sorted;
            a partition has more than one when the learner resumed past a gap.
        positions: Last consumed offset per topic-partition (where to resume); may
            run ahead of ``offsets`` after a rebase onto a checkpoint.
        newest_label_at: Newest ``labelled_at`` learned, if any.

    """

    base_version: int
    examples_learned: int = 0
    duplicates: int = 0
    scored: int = 0
    score_total: float = 0.0
    window: tuple[float, ...] = ()
    recent_ids: tuple[bytes, ...] = ()
    offsets: tuple[OffsetSpan, ...] = ()
    positions: tuple[Position, ...] = ()
    newest_label_at: float | None = None


def id_digest(example_id: str) -> bytes:
    """A short, stable digest of an example id (what the dedupe set stores).

    >>> len(id_digest("p-1")), id_digest("p-1") == id_digest("p-1")
    (8, True)
    """
    return hashlib.blake2b(example_id.encode(), digest_size=_ID_DIGEST_BYTES).digest()


class _Score:
    """Progressive validation: the cumulative score, and the rolling one the monitor shares."""

    def __init__(self, kind: LearnerKind, window_size: int, saved: Progress) -> None:
        self.name: QualityMetric = "accuracy" if kind == "classifier" else "mae"
        self.scored = saved.scored
        self.total = saved.score_total
        self.rolling = RollingQuality(self.name, window_size, saved.window)

    @property
    def window(self) -> tuple[float, ...]:
        return self.rolling.scores

    def add(self, y_true: Value, y_pred: Any) -> None:
        self.total += self.rolling.update(y_true, y_pred)
        self.scored += 1

    def metrics(self) -> dict[str, float]:
        rolling = self.rolling.value
        if not self.scored or rolling is None:
            return {}
        return {self.name: self.total / self.scored, f"rolling_{self.name}": rolling}


class Learner:
    """The online learner of one version of a model, from that (base) version.

    Args:
        model_name: The model it learns.
        kind: ``classifier`` (accuracy) or ``regressor`` (mean absolute error).
        base_version: Registry version whose artifact ``model`` was loaded from.
        model: The River estimator; the learner mutates it in place.
        progress: Saved bookkeeping to continue from (None: a fresh start).
        dedupe_ids: How many recent example ids are remembered to drop duplicates.
        metric_window: Size of the rolling metric window.

    """

    def __init__(
        self,
        model_name: str,
        kind: LearnerKind,
        *,
        base_version: int,
        model: Any,
        progress: Progress | None = None,
        dedupe_ids: int = DEFAULT_DEDUPE_IDS,
        metric_window: int = DEFAULT_METRIC_WINDOW,
    ) -> None:
        if kind not in ("classifier", "regressor"):
            raise InvalidInput(f"learner kind must be classifier or regressor, got {kind!r}")
        saved = progress or Progress(base_version=base_version)
        if saved.base_version != base_version:
            raise InvalidInput(
                f"progress of base version {saved.base_version} does not fit version {base_version}"
            )
        self.model_name = model_name
        self.kind: LearnerKind = kind
        self.base_version = base_version
        self.model = model
        self._learned = saved.examples_learned
        self._duplicates = saved.duplicates
        self._score = _Score(kind, metric_window, saved)
        self._recent: deque[bytes] = deque(saved.recent_ids[-dedupe_ids:], maxlen=dedupe_ids)
        self._recent_set = set(self._recent)
        self._spans: dict[tuple[str, int], list[list[int]]] = {}
        for span in saved.offsets:
            self._spans.setdefault((span.topic, span.partition), []).append([span.first, span.last])
        self._positions = {
            tp: max(last for _, last in ranges) for tp, ranges in self._spans.items()
        }
        self._positions.update({(p.topic, p.partition): p.offset for p in saved.positions})
        # A restored learner may come back after examples it never saw (its route was
        # gone for a while): the first offset it consumes past a gap opens a new range.
        self._resuming = set(self._positions)
        self._newest_label_at = saved.newest_label_at

    @property
    def examples_learned(self) -> int:
        """Examples learned since the base version."""
        return self._learned

    @property
    def scored(self) -> int:
        """Predictions scored by the progressive metric since the base version."""
        return self._score.scored

    def partitions(self) -> set[tuple[str, int]]:
        """The topic-partitions the learner has consumed from."""
        return set(self._positions)

    def next_offset(self, topic: str, partition: int) -> int | None:
        """The first offset of ``topic``/``partition`` not yet consumed (None: never read it)."""
        last = self._positions.get((topic, partition))
        return None if last is None else last + 1

    def _consumed(self, at: Position) -> bool:
        last = self._positions.get((at.topic, at.partition))
        return last is not None and at.offset <= last

    def process(self, example: Example, at: Position) -> StepKind:
        """Test-then-train on one example, unless it was already consumed or learned.

        Raises:
            Exception: Whatever the River model raises on this example; the
                learner's bookkeeping is left unchanged in that case.

        """
        if self._consumed(at):
            return StepKind.ALREADY_CONSUMED
        digest = id_digest(example.example_id)
        if digest in self._recent_set:
            self._consume(at)
            self._duplicates += 1
            return StepKind.DUPLICATE
        y_pred = self.model.predict_one(dict(example.features))
        self.model.learn_one(dict(example.features), example.label)
        if y_pred is not None and y_pred != {}:
            self._score.add(example.label, y_pred)
        self._remember(digest)
        self._consume(at)
        self._learned += 1
        if example.labelled_at is not None:
            self._newest_label_at = max(self._newest_label_at or 0.0, example.labelled_at)
        return StepKind.LEARNED

    def pause(self) -> None:
        """It will not be fed for a while (its route is gone; it may come back).

        When fed again, the first offset it consumes past a gap opens a new
        lineage range, as after a restore: the examples it missed are not in it.
        """
        self._resuming = set(self._positions)

    def skip(self, at: Position) -> None:
        """Mark a position consumed without learning (e.g. an example that failed)."""
        if not self._consumed(at):
            self._consume(at)

    def _consume(self, at: Position) -> None:
        tp = (at.topic, at.partition)
        ranges = self._spans.setdefault(tp, [])
        last = self._positions.get(tp)
        after_gap = tp in self._resuming and last is not None and at.offset > last + 1
        self._resuming.discard(tp)
        if not ranges or after_gap:
            ranges.append([at.offset, at.offset])
        else:
            ranges[-1][1] = at.offset
        self._positions[tp] = at.offset

    def rebase(self, version: int, mark: Progress) -> None:
        """Continue as the learner of ``version``, a checkpoint this learner registered.

        ``mark`` is the progress at the moment the checkpoint's state was taken:
        the model keeps everything it learned since, and the counts and offset
        ranges restart from the mark, so they describe what ``version`` lacks.

        Raises:
            InvalidInput: ``mark`` is not a checkpoint of this learner's base version.

        """
        if mark.base_version != self.base_version:
            raise InvalidInput(
                f"checkpoint of base version {mark.base_version} cannot rebase a learner "
                f"of version {self.base_version}"
            )
        marked = {(p.topic, p.partition): p.offset for p in mark.positions}
        spans = {}
        for tp, ranges in self._spans.items():
            kept = []
            for first, last in ranges:
                start = max(first, marked[tp] + 1) if tp in marked else first
                if start <= last:
                    kept.append([start, last])
            if kept:
                spans[tp] = kept
        self._spans = spans
        self.base_version = version
        self._learned -= mark.examples_learned
        self._duplicates -= mark.duplicates
        self._score.scored -= mark.scored
        self._score.total -= mark.score_total

    def _remember(self, digest: bytes) -> None:
        if self._recent.maxlen == 0:
            return
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(digest)
        self._recent_set.add(digest)

    def metrics(self) -> dict[str, float]:
        """Progressive-validation metrics (cumulative and rolling) and the example count."""
        return {**self._score.metrics(), "examples": float(self._learned)}

    def offsets(self) -> tuple[OffsetSpan, ...]:
        """Consumed offset ranges since the base version, sorted by topic and partition."""
        return tuple(
            OffsetSpan(topic, partition, first, last)
            for (topic, partition), ranges in sorted(self._spans.items())
            for first, last in ranges
        )

    def progress(self) -> Progress:
        """A snapshot of the bookkeeping (to save next to the model's state)."""
        return Progress(
            base_version=self.base_version,
            examples_learned=self._learned,
            duplicates=self._duplicates,
            scored=self._score.scored,
            score_total=self._score.total,
            window=tuple(self._score.window),
            recent_ids=tuple(self._recent),
            offsets=self.offsets(),
            positions=tuple(Position(t, p, o) for (t, p), o in sorted(self._positions.items())),
            newest_label_at=self._newest_label_at,
        )
