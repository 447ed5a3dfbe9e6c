"""Bandit routing: traffic weights chosen online by River's Thompson sampling.

A :class:`BanditRouter` keeps one Beta posterior per version (River's
``bandit.ThompsonSampling`` over ``proba.Beta``), fed the joined label of every
served prediction, and turns it into routing weights::

    weight(v) = floor + (1 - n x floor) x P(v is best)

so every version keeps at least ``floor`` of the traffic (exploration never
stops, a version that improves can win back its share) and the rest follows
the posterior probability of being best. That probability is estimated by
``draws`` Thompson pulls of the River policy: each pull samples every
posterior and picks the largest, so the share of pulls an arm wins is exactly
its probability of being best (Thompson, 1933), up to Monte Carlo error
(standard deviation at most ``0.5 / sqrt(draws)``). The policy is seeded, so
the same seed and the same calls give the same weights.

Rewards come from the same scores as the canary judge
(:func:`headwater.shared.quality.prediction_score`):

- classifiers: the score itself, 1 for a right label and 0 for a wrong one;
- regressors: an absolute error ``e`` becomes ``exp(-e / scale)`` in (0, 1],
  with ``scale`` the running mean absolute error of all versions (so an exact
  prediction earns 1, a typical error ``1/e``, and lower errors always earn
  more); the Beta posterior then learns from a Bernoulli trial with that
  success probability, which keeps it conjugate and the expected reward
  unchanged (Agrawal & Goyal, 2012).

Version 1 is right 80 % of the time, version 2 half of the time:

>>> import random
>>> rng, router = random.Random(3), BanditRouter([1, 2], seed=42)
>>> {v: round(w, 2) for v, w in router.weights().items()}  # no evidence yet: even
{1: 0.52, 2: 0.48}
>>> for _ in range(300):
...     router.observe(1, float(rng.random() < 0.8))
...     router.observe(2, float(rng.random() < 0.5))
>>> {v: round(w, 3) for v, w in router.weights().items()}
{1: 0.95, 2: 0.05}
>>> router.snapshot().samples[2], round(router.snapshot().mean_reward[2], 2)
(300, 0.52)

References:
    Thompson, W. R. (1933). On the likelihood that one unknown probability
    exceeds another in view of the evidence of two samples. Biometrika 25, 285-294.
    Agrawal, S., Goyal, N. (2012). Analysis of Thompson sampling for the
    multi-armed bandit problem. COLT 2012, JMLR W&CP 23, 39.1-39.26.

"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from river import bandit, proba

from headwater.services.monitor.statistics import Task
from headwater.shared.errors import InvalidInput

__all__ = ["BanditRouter", "BanditSnapshot"]


@dataclass(frozen=True)
class BanditSnapshot:
    """The router's state at one moment, by version.

    Attributes:
        weights: Share of traffic per version; each at least the floor, summing to 1.
        p_best: Estimated posterior probability that the version is the best.
        samples: Rewards observed per version.
        mean_reward: Mean reward per version (accuracy for classifiers), None before any.

    """

    weights: Mapping[int, float]
    p_best: Mapping[int, float]
    samples: Mapping[int, int]
    mean_reward: Mapping[int, float | None]

    @property
    def evidence(self) -> Mapping[str, float]:
        """The numbers by name, for an alert or a rollout transition.

        >>> BanditSnapshot({1: 0.9}, {1: 1.0}, {1: 7}, {1: None}).evidence
        mappingproxy({'weight_v1': 0.9, 'p_best_v1': 1.0, 'samples_v1': 7.0})
        """
        evidence: dict[str, float] = {}
        for version, weight in self.weights.items():
            evidence[f"weight_v{version}"] = weight
            evidence[f"p_best_v{version}"] = self.p_best[version]
            evidence[f"samples_v{version}"] = float(self.samples[version])
            mean = self.mean_reward[version]
            if mean is not None:
                evidence[f"mean_reward_v{version}"] = mean
        return MappingProxyType(evidence)


class BanditRouter:
    """Chooses routing weights among versions by Thompson sampling on their rewards.

    Pure and deterministic for a seed: no I/O, no clock.

    Args:
        versions: The versions to route between (distinct); fixed for the router's life.
        task: Classification (scores 1/0 correct) or regression (absolute errors).
        floor: Least weight of every version; at most ``1 / len(versions)``.
        draws: Thompson pulls per estimate of P(best).
        seed: Seeds the policy and the regression rewards' Bernoulli trials.

    """

    def __init__(
        self,
        versions: Sequence[int],
        task: Task = Task.CLASSIFICATION,
        *,
        floor: float = 0.05,
        draws: int = 1000,
        seed: int = 0,
    ) -> None:
        _check(versions, floor, draws)
        self.versions = tuple(versions)
        self.task = task
        self.floor = floor
        self.draws = draws
        self._policy = bandit.ThompsonSampling(reward_obj=proba.Beta(), seed=seed)
        # One pull creates every arm's posterior now, seeded in version order
        # rather than in the order the first rewards happen to arrive.
        self._policy.pull(list(self.versions))
        self._trials = random.Random(f"headwater.bandit.rewards:{seed}")
        self._samples = dict.fromkeys(self.versions, 0)
        self._reward_sums = dict.fromkeys(self.versions, 0.0)
        self._errors = 0
        self._error_sum = 0.0

    def observe(self, version: int, score: float) -> None:
        """Learn one joined label's score (1/0 correct, or an absolute error) for a version."""
        if version not in self._samples:
            raise InvalidInput(f"version {version} is not routed by this bandit: {self.versions}")
        reward = self._reward(score)
        self._policy.update(version, self._trials.random() < reward)
        self._samples[version] += 1
        self._reward_sums[version] += reward

    def weights(self) -> Mapping[int, float]:
        """The share of traffic per version now (see the module docstring)."""
        return self.snapshot().weights

    def snapshot(self) -> BanditSnapshot:
        """Weights, P(best), samples and mean rewards per version now."""
        arms: list[int | str] = list(self.versions)  # River's ArmID
        wins = Counter(self._policy.pull(arms) for _ in range(self.draws))
        p_best = {v: wins[v] / self.draws for v in self.versions}
        spread = 1.0 - len(self.versions) * self.floor
        weights = {v: self.floor + spread * p for v, p in p_best.items()}
        means = {v: self._reward_sums[v] / n if n else None for v, n in self._samples.items()}
        return BanditSnapshot(
            MappingProxyType(weights),
            MappingProxyType(p_best),
            MappingProxyType(dict(self._samples)),
            MappingProxyType(means),
        )

    def _reward(self, score: float) -> float:
        """A score as a reward in [0, 1]: itself for classifiers, exp(-e / MAE) for regressors."""
        if self.task is Task.CLASSIFICATION:
            if score not in (0.0, 1.0):
                raise InvalidInput(f"a classification score must be 0 or 1, got {score}")
            return score
        if not 0.0 <= score < math.inf:  # also refuses NaN
            raise InvalidInput(f"a regression score must be a finite error >= 0, got {score}")
        self._errors += 1
        self._error_sum += score
        scale = self._error_sum / self._errors
        return math.exp(-score / scale) if scale > 0 else 1.0


def _check(versions: Sequence[int], floor: float, draws: int) -> None:
    if not versions or len(set(versions)) != len(versions):
        raise InvalidInput(f"a bandit needs distinct versions, got {list(versions)}")
    if not 0.0 <= floor <= 1.0 / len(versions):
        raise InvalidInput(
            f"floor must be within [0, 1/{len(versions)}] for {len(versions)} versions, got {floor}"
        )
    if draws < 1:
        raise InvalidInput(f"draws must be >= 1, got {draws}")
