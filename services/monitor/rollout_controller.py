"""The rollout controller's core: which rollouts this monitor judges and what it asks the registry.

Pure: no I/O, no clock (callers pass ``now``, wall-clock seconds). The driver
(:mod:`headwater.services.monitor.rollout_driver`) feeds it the registry's
rollouts (``GetRollout`` when a model is first seen, ``ROLLOUT_CHANGED``
events), the joined labels and the latencies, asks :meth:`RolloutController.decide`
every tick, and tells it what the registry answered.

- **Judged**: a ``progressing`` canary, shadow or bandit rollout whose model's
  ``examples`` partition this replica consumes. Paused and pending rollouts
  are not judged (their evidence keeps accruing); blue-green and rolling ones
  never are here.
- **One actor per model**: the replica whose consumer group holds the model's
  ``examples`` partition decides (it alone has the labels); the registry's
  revision check turns a second actor's decision (during a rebalance) into a
  harmless refusal.
- **Refusals**: a refused transition holds the model's decisions at that
  revision and asks for a fresh copy of its rollout; once the registry's
  rollout has moved on (a stale revision) the controller judges it again,
  never retrying blindly. A fresh copy still at that revision means the
  decision was refused on the rollout as it stands (a promotion gate failed):
  the rollout is *blocked* (:mod:`~headwater.services.monitor.rollout_blocks`),
  the decision tried again every ``blocked_retry_s``, at once when the
  model's gates change, and raised once per reason as a ``rollout.blocked`` alert.

>>> controller = RolloutController()
>>> controller.track(TrackedRollout("r1", "churn", "canary", "progressing", 1, 2,
...     step_started_at=0.0, policy=JudgingPolicy(step_percents=(50.0, 100.0), min_samples=30,
...     interval_s=1.0)))
True
>>> for i in range(100):
...     controller.observe_example(ExampleObserved("churn", 1, CLS, True, True), partition=0)
...     controller.observe_example(ExampleObserved("churn", 2, CLS, True, i % 3 == 0), partition=0)
>>> controller.decide(now=2.0, owned_partitions={1})  # another replica owns partition 0
()
>>> (rollback,) = controller.decide(now=2.0, owned_partitions={0})
>>> rollback.action, rollback.expected_revision, rollback.decision.evidence["samples_candidate"]
(<Action.ROLLBACK: 'rollback'>, 1, 100.0)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from headwater.services.monitor.canary import Action, Decision
from headwater.services.monitor.domain import (
    AlertRaised,
    ExampleObserved,
    PredictionObserved,
    Severity,
)
from headwater.services.monitor.rollout_blocks import Blocked, RefusalBook
from headwater.services.monitor.rollouts import (
    JudgingPolicy,
    RolloutJudge,
    TrackedRollout,
    make_judge,
)
from headwater.services.monitor.statistics import Task
from headwater.shared.errors import InvalidInput
from headwater.shared.quality import prediction_score

__all__ = [
    "Blocked",
    "JudgingPolicy",
    "Look",
    "RolloutController",
    "RolloutView",
    "RolloutsSnapshot",
    "TrackedRollout",
    "Transition",
    "decision_alert",
]

CLS = Task.CLASSIFICATION  # for the doctests


@dataclass(frozen=True)
class Transition:
    """One ``TransitionRollout`` the controller asks of the registry.

    Attributes:
        rollout: The rollout as the controller decided on it (its revision is expected).
        decision: What to do, why, and the evidence.

    """

    rollout: TrackedRollout
    decision: Decision

    @property
    def model(self) -> str:
        """The rollout's model."""
        return self.rollout.model

    @property
    def action(self) -> Action:
        """ADVANCE, PROMOTE or ROLLBACK."""
        return self.decision.action

    @property
    def expected_revision(self) -> int:
        """The revision the decision was made on (a stale one is refused)."""
        return self.rollout.revision

    @property
    def evidence(self) -> dict[str, float]:
        """The decision's evidence the registry can record (finite values only).

        >>> rollout = TrackedRollout("r1", "m", "canary", "progressing", 1, 2)
        >>> Transition(rollout, Decision(Action.ADVANCE, "ok", {"z": math.inf, "n": 3.0})).evidence
        {'n': 3.0}
        """
        return {name: v for name, v in self.decision.evidence.items() if math.isfinite(v)}


@dataclass(frozen=True)
class Look:
    """A decision and when it was made (``at``, seconds)."""

    decision: Decision
    at: float


@dataclass(frozen=True)
class RolloutView:
    """What the monitor knows of one model's rollout, for ``/v1/models/{name}``.

    Attributes:
        rollout: The registry's rollout as last seen.
        judged: Whether this monitor decides it now.
        acting: Whether this replica owns the model's ``examples`` partition.
        note: Why it is not judged (empty when it is).
        latest: The latest look (CONTINUE included) with its evidence.
        last_decision: The latest decision the registry accepted.
        blocked: The decision the registry refuses on the rollout as it stands
            (a failed promotion gate), with its message; None when none is.

    """

    rollout: TrackedRollout
    judged: bool
    acting: bool
    note: str
    latest: Look | None
    last_decision: Look | None
    blocked: Blocked | None = None


@dataclass(frozen=True)
class RolloutsSnapshot:
    """Every tracked rollout, and the decisions the registry accepted.

    Attributes:
        rollouts: By model.
        decisions: Accepted decisions by (model, action), since the monitor started.
        blocked: Decisions refused on the rollout as it stood, by (model, action).

    """

    rollouts: Mapping[str, RolloutView]
    decisions: Mapping[tuple[str, str], int]
    blocked: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))


class _Tracked:
    """The mutable state of one model's rollout; only :class:`RolloutController` touches it."""

    def __init__(self, rollout: TrackedRollout) -> None:
        self.rollout = rollout
        self.judge: RolloutJudge | None = None
        self.unjudgeable = ""
        self.latest: Look | None = None
        self.last_decision: Look | None = None


class RolloutController:
    """Tracks rollouts, feeds their judges, and turns their decisions into transitions.

    Args:
        bandit_draws: Thompson pulls per bandit weight estimate.
        blocked_retry_s: How long a blocked decision is held before it is tried again.

    """

    def __init__(self, bandit_draws: int = 1000, blocked_retry_s: float = 30.0) -> None:
        self._bandit_draws = bandit_draws
        self._refusals = RefusalBook(blocked_retry_s)
        self._tracked: dict[str, _Tracked] = {}
        self._seen: set[str] = set()
        self._fetched: set[str] = set()
        self._stale: set[str] = set()
        self._partitions: dict[str, int] = {}
        self._tasks: dict[str, Task] = {}
        self._decisions: Counter[tuple[str, str]] = Counter()

    # --- what the registry says ---------------------------------------------------

    def track(self, rollout: TrackedRollout) -> bool:
        """Take the registry's copy of a model's rollout; True when it changed anything.

        An older copy than the one tracked (a late event) is ignored. The same
        rollout at a new revision moves its judge along (advance, resume); a
        new rollout gets a new judge.
        """
        model = rollout.model
        self._fetched.add(model)
        self._stale.discard(model)
        tracked = self._tracked.get(model)
        if tracked is not None and not rollout.supersedes(tracked.rollout):
            return False
        if tracked is None or tracked.rollout.rollout_id != rollout.rollout_id:
            tracked = self._tracked[model] = _Tracked(rollout)
        else:
            tracked.rollout = rollout
        self._refusals.moved(rollout)
        self._follow(tracked)
        return True

    def reread(self, rollout: TrackedRollout, now: float) -> bool:
        """Take the registry's answer to ``GetRollout`` (its rollout as it is now).

        As :meth:`track`; and when a decision on this very revision was refused,
        the rollout is blocked (see :mod:`~headwater.services.monitor.rollout_blocks`).
        """
        changed = self.track(rollout)
        self._refusals.reread(rollout, now)
        return changed

    def gates_changed(self, model: str) -> None:
        """The model's promotion gates changed: a blocked decision is tried at the next tick."""
        self._refusals.gates_changed(model)

    def no_rollout(self, model: str) -> None:
        """The registry has no rollout of ``model`` (it never had one)."""
        self._fetched.add(model)
        self._stale.discard(model)

    def models_to_refresh(self) -> tuple[str, ...]:
        """Models whose rollout to ask the registry for: first seen, or refused a decision."""
        return tuple(sorted((self._seen - self._fetched) | self._stale))

    # --- what the streams say -----------------------------------------------------

    def observe_example(self, example: ExampleObserved, partition: int | None = None) -> None:
        """Learn where a model's examples are, its task, and feed its rollout's judge.

        Args:
            example: A labelled example the monitor's state accepted.
            partition: The ``examples`` partition it came from (who owns the model).

        """
        model = example.model
        self._seen.add(model)
        if partition is not None:
            self._partitions[model] = partition
        if example.prediction is None:
            return
        self._tasks[model] = example.task
        tracked = self._judging(model, example.predicted_at)
        if tracked is None or tracked.judge is None or tracked.judge.task is not example.task:
            return
        score = prediction_score(example.task.quality_metric, example.label, example.prediction)
        tracked.judge.observe(example, score)

    def observe_prediction(self, prediction: PredictionObserved) -> None:
        """Note the model, and feed a served prediction's latency to its rollout's judge."""
        self._seen.add(prediction.model)
        tracked = self._judging(prediction.model, prediction.predicted_at)
        if tracked is not None and tracked.judge is not None:
            tracked.judge.observe_latency(prediction)

    # --- deciding -----------------------------------------------------------------

    def owns(self, model: str, owned_partitions: Collection[int]) -> bool:
        """Whether this replica consumes the model's ``examples`` partition (and so acts)."""
        return self._partitions.get(model, -1) in owned_partitions

    def decide(self, now: float, owned_partitions: Collection[int]) -> tuple[Transition, ...]:
        """Look at every rollout this replica judges; the transitions to ask for.

        Args:
            now: Wall-clock seconds.
            owned_partitions: The ``examples`` partitions this replica's group member holds.

        """
        transitions = []
        for model, tracked in sorted(self._tracked.items()):
            if self._not_judged_because(tracked) or not self.owns(model, owned_partitions):
                continue
            assert tracked.judge is not None
            decision = tracked.judge.decide(now)
            tracked.latest = Look(decision, now)
            if decision.action is Action.CONTINUE:
                continue
            if not self._refusals.holds_back(tracked.rollout, decision.action, now):
                transitions.append(Transition(tracked.rollout, decision))
        return tuple(transitions)

    def accepted(self, transition: Transition, after: TrackedRollout, now: float) -> AlertRaised:
        """The registry made the transition: count it, follow the rollout; the alert to raise."""
        self._decisions[(transition.model, transition.action.value)] += 1
        self.track(after)
        tracked = self._tracked[transition.model]
        if tracked.rollout.rollout_id == transition.rollout.rollout_id:
            tracked.last_decision = Look(transition.decision, now)
        return decision_alert(transition, now)

    def refused(self, transition: Transition, message: str = "") -> None:
        """The registry refused it (``message`` says why): hold, and read the rollout again.

        The copy read then (:meth:`reread`) tells a stale revision (the rollout
        moved: judged afresh) from a block (still at that revision).
        """
        self._refusals.refused(
            transition.rollout, transition.action, message, transition.evidence
        )
        self._stale.add(transition.model)

    def drain_alerts(self) -> list[AlertRaised]:
        """The ``rollout.blocked`` alerts raised since the last call (one per reason)."""
        return self._refusals.drain_alerts()

    def snapshot(self, owned_partitions: Collection[int]) -> RolloutsSnapshot:
        """Every tracked rollout's view, and the accepted decisions counted."""
        views = {}
        for model, tracked in sorted(self._tracked.items()):
            note = self._not_judged_because(tracked)
            acting = self.owns(model, owned_partitions)
            blocked = self._refusals.blocked(tracked.rollout)
            views[model] = RolloutView(
                tracked.rollout, not note, acting, note, tracked.latest, tracked.last_decision,
                blocked,
            )  # fmt: skip
        return RolloutsSnapshot(
            MappingProxyType(views),
            MappingProxyType(dict(self._decisions)),
            MappingProxyType(dict(self._refusals.counts)),
        )

    # --- inside -------------------------------------------------------------------

    def _judging(self, model: str, predicted_at: float | None) -> _Tracked | None:
        """The model's active rollout, unless the prediction was served before it began."""
        tracked = self._tracked.get(model)
        if tracked is None or not tracked.rollout.active:
            return None
        if predicted_at is not None and predicted_at < tracked.rollout.created_at:
            return None
        if tracked.judge is None and not tracked.unjudgeable:
            self._build_judge(tracked)
        return tracked

    def _follow(self, tracked: _Tracked) -> None:
        rollout = tracked.rollout
        if not rollout.active or not rollout.judged:
            tracked.judge = None
        elif tracked.judge is None:
            self._build_judge(tracked)
        else:
            try:
                tracked.judge.follow(rollout)
            except InvalidInput as err:  # a step the policy does not have
                tracked.judge, tracked.unjudgeable = None, str(err)

    def _build_judge(self, tracked: _Tracked) -> None:
        task, rollout = self._tasks.get(tracked.rollout.model), tracked.rollout
        if task is None or not rollout.active or not rollout.judged:
            return
        try:
            tracked.judge = make_judge(rollout, task, self._bandit_draws)
        except InvalidInput as err:
            tracked.unjudgeable = str(err)

    def _not_judged_because(self, tracked: _Tracked) -> str:
        """Why the rollout is not judged now; empty when it is."""
        rollout = tracked.rollout
        if not rollout.active:
            return f"{rollout.state.replace('_', ' ')}: nothing left to judge"
        if not rollout.judged:
            return f"{rollout.strategy}: switched by an operator (advance), not judged here"
        if rollout.state != "progressing":
            return f"{rollout.state}: not judged until it progresses"
        if tracked.unjudgeable:
            return f"cannot be judged: {tracked.unjudgeable}"
        if tracked.judge is None:
            return "waits for the first labelled example"
        if self._refusals.re_reading(rollout):
            return f"the registry refused a decision at revision {rollout.revision}: re-reading it"
        return ""


def decision_alert(transition: Transition, now: float) -> AlertRaised:
    """The alert of a decision the registry accepted: kind ``rollout.<action>``, its evidence.

    >>> rollout = TrackedRollout("r1", "churn", "canary", "progressing", 1, 2)
    >>> alert = decision_alert(Transition(rollout, Decision(Action.ROLLBACK, "worse", {"z": 3.0})),
    ...                        now=5.0)
    >>> alert.kind, alert.version, alert.severity, dict(alert.values)
    ('rollout.rollback', 2, <Severity.WARNING: 'warning'>, {'z': 3.0})
    >>> alert.message
    'churn: canary of v2 over v1: rollback: worse'
    """
    action, rollout = transition.action, transition.rollout
    assert action.alert_kind is not None, "CONTINUE is no transition"
    return AlertRaised(
        model=rollout.model,
        version=rollout.candidate_version,
        kind=action.alert_kind,
        severity=Severity.WARNING if action is Action.ROLLBACK else Severity.INFO,
        message=f"{rollout.model}: {rollout.describe()}: {action.value}: "
        f"{transition.decision.reason}",
        values=MappingProxyType(transition.evidence),
        raised_at=now,
    )
