"""Decisions the registry refused on a rollout as it stands: blocked rollouts (pure).

The registry refuses a ``TransitionRollout`` (FAILED_PRECONDITION) for one of two reasons:

- the rollout moved meanwhile (a stale revision: an operator paused it,
  another replica decided first). Read again, the rollout has a new revision:
  the controller judges the new copy;
- the decision cannot be made on the rollout as it is: a **promotion gate**
  failed (the candidate's trainer-reported score is too low or rests on too
  few examples, its warm-up on a gateway too slow). Read again, the rollout
  is at the same revision.

The second is a *block*. The decision is held: tried again every ``retry_s``
(a new evaluation may make the gate pass; the registry records evaluations
without events, so only trying tells), at once when the model's gates change,
and dropped when the rollout moves (then judged afresh). Each block is counted,
shown in the rollout's view with the registry's message, and raised as an
``Alert`` of kind ``rollout.blocked`` once per distinct message, numbers
aside (the margin moves with every evaluation, the reason does not).

>>> book = RefusalBook(retry_s=30.0)
>>> rollout = TrackedRollout("r1", "churn", "canary", "progressing", 1, 2, revision=4)
>>> gate = "version 2 of 'churn' cannot be promoted: gate min_score failed: accuracy 0.81 < 0.85"
>>> book.refused(rollout, Action.PROMOTE, gate, {})
>>> book.re_reading(rollout)  # stale, or blocked? the registry's copy tells
True
>>> book.reread(rollout, now=10.0)  # still at revision 4: blocked
>>> blocked = book.blocked(rollout)
>>> blocked.retry_at, book.holds_back(rollout, Action.PROMOTE, now=39.0)
(40.0, True)
>>> [alert.kind for alert in book.drain_alerts()]
['rollout.blocked']
>>> book.refused(rollout, Action.PROMOTE, gate.replace("0.81", "0.82"), {})
>>> book.reread(rollout, now=40.0)  # refused again: the same reason, no second alert
>>> book.drain_alerts(), book.blocked(rollout).refusals, dict(book.counts)
([], 2, {('churn', 'promote'): 2})
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from headwater.services.monitor.canary import Action
from headwater.services.monitor.domain import AlertRaised, Severity
from headwater.services.monitor.rollouts import TrackedRollout

__all__ = ["BLOCKED_KIND", "Blocked", "RefusalBook", "message_shape"]

#: The kind of the alert a blocked rollout raises.
BLOCKED_KIND = "rollout.blocked"
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Blocked:
    """A decision the registry refused on the rollout as it stands, held by the controller.

    Attributes:
        action: The decision refused (PROMOTE, when a promotion gate fails).
        revision: The rollout revision it was refused at.
        message: The registry's refusal (which gate failed, by how much).
        since: When it was first refused at this revision (seconds).
        retry_at: When it is tried again (seconds; 0: at the next tick).
        refusals: How many times it was refused at this revision.

    """

    action: Action
    revision: int
    message: str
    since: float
    retry_at: float
    refusals: int


@dataclass(frozen=True)
class _Refused:
    """A refusal waiting for the registry's copy of the rollout to tell what it was."""

    rollout: TrackedRollout
    action: Action
    message: str
    evidence: Mapping[str, float]


def message_shape(message: str) -> str:
    """A refusal's message with its numbers left out: what one alert is raised per.

    >>> message_shape("accuracy 0.81 < 0.85 (short by 0.04) over 1200 examples")
    'accuracy # < # (short by #) over # examples'
    """
    return _NUMBER.sub("#", message)


def _same(a: TrackedRollout, b: TrackedRollout) -> bool:
    return (a.rollout_id, a.revision) == (b.rollout_id, b.revision)


class RefusalBook:
    """The refusals and blocks of every model's rollout; only the controller writes it.

    Args:
        retry_s: How long a blocked decision is held before it is tried again.

    Attributes:
        counts: Blocked refusals by (model, action), since the monitor started.

    """

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self.counts: Counter[tuple[str, str]] = Counter()
        self._refused: dict[str, _Refused] = {}
        self._blocked: dict[str, Blocked] = {}
        self._alerted: dict[str, tuple[str, set[str]]] = {}  # model -> (rollout id, shapes)
        self._alerts: list[AlertRaised] = []

    def refused(
        self,
        rollout: TrackedRollout,
        action: Action,
        message: str,
        evidence: Mapping[str, float],
    ) -> None:
        """The registry refused ``action`` on ``rollout`` (the copy it was decided on)."""
        self._refused[rollout.model] = _Refused(rollout, action, message, evidence)

    def re_reading(self, rollout: TrackedRollout) -> bool:
        """Whether a decision on this very copy was refused and the rollout is read again."""
        refused = self._refused.get(rollout.model)
        return refused is not None and _same(refused.rollout, rollout)

    def reread(self, current: TrackedRollout, now: float) -> None:
        """The registry's rollout as it is now: a refusal at this very revision is a block."""
        refused = self._refused.get(current.model)
        if refused is None or not _same(refused.rollout, current):
            return
        del self._refused[current.model]
        model, before = current.model, self._blocked.get(current.model)
        again = before is not None and (before.revision, before.action) == (
            current.revision, refused.action)  # fmt: skip
        self._blocked[model] = Blocked(
            action=refused.action,
            revision=current.revision,
            message=refused.message,
            since=before.since if again and before is not None else now,
            retry_at=now + self.retry_s,
            refusals=before.refusals + 1 if again and before is not None else 1,
        )
        self.counts[(model, refused.action.value)] += 1
        self._alert_once(current, refused, now)

    def moved(self, rollout: TrackedRollout) -> None:
        """A newer copy of the model's rollout: refusals and blocks of older ones are void."""
        refused = self._refused.get(rollout.model)
        if refused is not None and not _same(refused.rollout, rollout):
            del self._refused[rollout.model]
        blocked = self._blocked.get(rollout.model)
        if blocked is not None and blocked.revision != rollout.revision:
            del self._blocked[rollout.model]

    def gates_changed(self, model: str) -> None:
        """The model's promotion gates changed: a blocked decision is tried at the next tick."""
        blocked = self._blocked.get(model)
        if blocked is not None:
            self._blocked[model] = dataclasses.replace(blocked, retry_at=0.0)

    def blocked(self, rollout: TrackedRollout) -> Blocked | None:
        """The block of this copy of the rollout, if its decision is blocked."""
        blocked = self._blocked.get(rollout.model)
        return blocked if blocked is not None and blocked.revision == rollout.revision else None

    def holds_back(self, rollout: TrackedRollout, action: Action, now: float) -> bool:
        """Whether ``action`` on this copy is blocked and not due to be tried again yet."""
        blocked = self.blocked(rollout)
        return blocked is not None and blocked.action is action and now < blocked.retry_at

    def drain_alerts(self) -> list[AlertRaised]:
        """The ``rollout.blocked`` alerts raised since the last call."""
        alerts, self._alerts = self._alerts, []
        return alerts

    def _alert_once(self, rollout: TrackedRollout, refused: _Refused, now: float) -> None:
        rollout_id, shapes = self._alerted.get(rollout.model, ("", set()))
        if rollout_id != rollout.rollout_id:  # a new rollout: its own alerts
            shapes = set()
        self._alerted[rollout.model] = (rollout.rollout_id, shapes)
        shape = message_shape(refused.message)
        if shape in shapes:
            return
        shapes.add(shape)
        evidence = {k: v for k, v in refused.evidence.items() if math.isfinite(v)}
        self._alerts.append(
            AlertRaised(
                model=rollout.model,
                version=rollout.candidate_version,
                kind=BLOCKED_KIND,
                severity=Severity.WARNING,
                message=f"{rollout.model}: {rollout.describe()}: {refused.action.value} "
                f"blocked: {refused.message}",
                values=MappingProxyType(evidence),
                raised_at=now,
            )
        )
