"""What the pool keeps per learner: three parts, each written by one owner.

An :class:`ActiveLearner` is frozen; its three parts are not, and each has one writer:

- ``loaded`` (:class:`~headwater.services.trainer.learn.loading.LoadedLearner`):
  the learner and its base version's spec, seed and schema; written once, by
  the loader. The learner inside changes only through the pool (learn, skip, rebase).
- ``saving`` (:class:`SaveState`): the sequence, the offsets consumed but not
  saved yet, the sync cadence; written only by the pool, through its methods.
- ``checkpoints`` (:class:`~headwater.services.trainer.learn.checkpoints.CheckpointState`):
  the checkpoint cadence, the registration in flight, the marks of registered
  checkpoints; written only by the
  :class:`~headwater.services.trainer.learn.checkpoints.Checkpointer`.

>>> state = SaveState(sequence=4)
>>> state.consumed(Position("ex", 0, 7)); state.consumed(Position("ex", 0, 8))
>>> state.unsaved_from, state.dirty, state.reserve_sequence(published=6)
({('ex', 0): 7}, True, 7)
>>> state.acknowledged(now=1.0); state.unsaved_from, state.dirty
({}, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from headwater.services.trainer.learn.checkpoints import CheckpointState
from headwater.services.trainer.learn.learner import Learner, Position
from headwater.services.trainer.learn.loading import LoadedLearner
from headwater.services.trainer.learn.routes import LearnerId

#: A topic-partition: (topic, partition).
TP = tuple[str, int]


@dataclass
class SaveState:
    """What a learner's next ModelUpdate must save; written only by the pool.

    Attributes:
        sequence: The last sequence reserved for an update of this learner.
        unsaved_from: Per topic-partition, the first offset consumed since the last save.
        dirty: Whether anything was consumed since the last save.
        last_sync: When the last save was acknowledged (monotonic seconds).

    """

    sequence: int
    unsaved_from: dict[TP, int] = field(default_factory=dict)
    dirty: bool = False
    last_sync: float = float("-inf")

    def consumed(self, at: Position) -> None:
        """Note a consumed position that the next ModelUpdate must save."""
        self.unsaved_from.setdefault((at.topic, at.partition), at.offset)
        self.dirty = True

    def reserve_sequence(self, published: int) -> int:
        """The next update's sequence, above ours and the ``published`` one; never reused."""
        self.sequence = max(self.sequence, published) + 1
        return self.sequence

    def acknowledged(self, now: float) -> None:
        """An update was acknowledged: everything consumed so far is safe."""
        self.unsaved_from.clear()
        self.dirty = False
        self.last_sync = now

    def rebased(self) -> None:
        """The learner has a new base version: publish under it at once."""
        self.dirty, self.last_sync = True, float("-inf")


@dataclass(frozen=True)
class ActiveLearner:
    """A version's learner and what is tracked about it, each part written by one owner.

    Attributes:
        loaded: The learner and its base version's spec, seed and schema (the loader).
        saving: What the next ModelUpdate must save (the pool).
        checkpoints: Checkpoint cadence, registrations and marks (the checkpointer).

    """

    loaded: LoadedLearner
    saving: SaveState
    checkpoints: CheckpointState

    @property
    def learner(self) -> Learner:
        """The version's learner."""
        return self.loaded.learner

    @property
    def learner_id(self) -> LearnerId:
        """Its model and (base) version: what the pool knows it by."""
        return LearnerId(self.learner.model_name, self.learner.base_version)

    @property
    def sequence(self) -> int:
        """The last sequence reserved for an update of this learner."""
        return self.saving.sequence

    @property
    def checkpoint_error(self) -> str:
        """Why the last checkpoint failed; empty once one succeeds."""
        return self.checkpoints.error
