"""An always-valid sequential test that a candidate is no worse than its baseline.

The test behind :class:`headwater.services.monitor.canary.CanaryJudge`: a
one-sided normal-mixture sequential probability ratio test (mSPRT) for a
difference of two means, with plug-in variances.

Let ``drop`` be how much worse the candidate's mean score is than the
baseline's, in the metric's units (baseline - candidate accuracy, or
candidate - baseline MAE). The null hypothesis is ``drop <= max_drop``.
With per-arm counts ``n``, means and variances ``v``, the estimate ``d̂`` has
standard error ``s = sqrt(v_c / n_c + v_b / n_b)``; let
``z = (d̂ - max_drop) / s``. Mixing the likelihood ratio of every excess drop
``δ > 0`` over a half-normal of scale ``τ = mixture_scale x sd`` (sd² the
variance of both arms' scores pooled), with ``r = τ² / s²``, gives::

    Λ = 2 Φ(z √(r / (1 + r))) · exp(z² r / (2 (1 + r))) / √(1 + r)

Guarantee. In the normal approximation, ``(d̂ - drop) / s²`` is a Brownian
motion in the information ``1 / s²`` for any allocation of examples to the
arms that does not depend on their outcomes (routing by a key's hash), so for
every ``drop <= max_drop`` each mixed ratio, hence Λ, is a nonnegative
supermartingale starting at 1, and Ville's inequality bounds the chance that Λ
*ever* reaches ``1 / alpha`` by ``alpha``. The p-value ``min(1, 1 / Λ)``,
minimised over the looks, is therefore always valid: however often, and at
whatever times, one looks, a candidate no worse than ``max_drop`` is rejected
with probability at most ``alpha``. (A rollout's allocation does depend on its
own decisions, but only through "no rollback yet": until the first rollback it
equals the allocation of a judge that never rolls back, so the bound holds.)
The variances (hence τ) are estimated, as in the references, which makes
the guarantee asymptotic; each arm's variance is floored at the pooled one,
which is conservative, keeps small samples from understating it, and still
lets two arms that are each constant so far (all right against all wrong)
conclude. The tests check the rate by simulation at the judge's defaults.

>>> candidate, baseline = RunningMoments(), RunningMoments()
>>> for i in range(400):
...     candidate.add(float(i % 10 < 6))  # accuracy 0.6
...     baseline.add(float(i % 10 < 8))  # accuracy 0.8
>>> test = drop_test(candidate.moments(), baseline.moments(), higher_is_better=True,
...                  max_drop=0.01, mixture_scale=0.1)
>>> round(test.drop, 4), round(test.z, 2), test.p_value < 1e-4
(0.2, 5.66, True)

References:
    Robbins, H. (1970). Statistical methods related to the law of the iterated
    logarithm. Annals of Mathematical Statistics 41(5), 1397-1409.
    Johari, R., Koomen, P., Pekelis, L., Walsh, D. (2017). Peeking at A/B tests:
    why it matters, and what to do about it. KDD '17, 1517-1525.
    Johari, R., Pekelis, L., Walsh, D. (2022). Always valid inference: continuous
    monitoring of A/B tests. Operations Research 70(3), 1806-1821.
    Howard, S. R., Ramdas, A., McAuliffe, J., Sekhon, J. (2021). Time-uniform,
    nonparametric, nonasymptotic confidence sequences. Annals of Statistics
    49(2), 1055-1080 (the one-sided normal mixture).

"""

from __future__ import annotations

import math
from dataclasses import dataclass

from headwater.shared.errors import InvalidInput

__all__ = [
    "DropTest",
    "RunningMoments",
    "ScoreMoments",
    "drop_test",
    "mixture_log_likelihood_ratio",
]

_LOG_2 = math.log(2.0)
# Below this, Φ(u) underflows in erfc; its asymptotic expansion takes over.
_LOG_CDF_ASYMPTOTIC_BELOW = -30.0


@dataclass(frozen=True)
class ScoreMoments:
    """Count, mean and unbiased variance of one arm's scores.

    Attributes:
        count: Number of scores.
        mean: Their mean (0 when there are none).
        variance: Their sample variance (divisor ``count - 1``; 0 below two).

    """

    count: int
    mean: float
    variance: float

    def pooled_with(self, other: ScoreMoments) -> ScoreMoments:
        """The moments of both samples taken together (Chan et al.'s update).

        >>> ScoreMoments(2, 0.0, 0.0).pooled_with(ScoreMoments(2, 1.0, 0.0))
        ScoreMoments(count=4, mean=0.5, variance=0.3333333333333333)
        """
        count = self.count + other.count
        if count == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        squares = (
            self.variance * max(self.count - 1, 0)
            + other.variance * max(other.count - 1, 0)
            + delta * delta * self.count * other.count / count
        )
        return ScoreMoments(count, mean, squares / (count - 1) if count > 1 else 0.0)


class RunningMoments:
    """Welford's running mean and variance, one score at a time."""

    __slots__ = ("_count", "_mean", "_squares")

    def __init__(self) -> None:
        self._count = 0
        self._mean = 0.0
        self._squares = 0.0

    def add(self, score: float) -> None:
        """Count one score."""
        self._count += 1
        delta = score - self._mean
        self._mean += delta / self._count
        self._squares += delta * (score - self._mean)

    def moments(self) -> ScoreMoments:
        """The moments so far."""
        variance = self._squares / (self._count - 1) if self._count > 1 else 0.0
        return ScoreMoments(self._count, self._mean, variance)


@dataclass(frozen=True)
class DropTest:
    """One look of the test.

    Attributes:
        drop: How much worse the candidate's mean is, in the metric's units.
        standard_error: Standard error of ``drop``.
        z: ``(drop - max_drop) / standard_error``; large means worse.
        log_likelihood_ratio: log Λ, the mixture ratio against the null.

    """

    drop: float
    standard_error: float
    z: float
    log_likelihood_ratio: float

    @property
    def p_value(self) -> float:
        """``min(1, 1 / Λ)``: the test rejects at level alpha when this is <= alpha."""
        return min(1.0, math.exp(-self.log_likelihood_ratio))


def drop_test(
    candidate: ScoreMoments,
    baseline: ScoreMoments,
    *,
    higher_is_better: bool,
    max_drop: float,
    mixture_scale: float,
) -> DropTest | None:
    """Test "the candidate is worse by at most max_drop" on the scores so far.

    Args:
        candidate: The candidate's scores.
        baseline: The baseline's scores.
        higher_is_better: True for accuracy-like scores, False for errors.
        max_drop: The non-inferiority margin, in the scores' units.
        mixture_scale: The mixing scale τ in units of the scores' pooled
            standard deviation. The boundary is tightest when τ² / s² is near
            8 (at alpha 0.05), i.e. around ``8 / mixture_scale²`` examples in
            the smaller arm: the default 0.1 suits rollouts of hundreds to
            thousands of labelled examples.

    Returns:
        The look, or None while an arm has fewer than two scores or all scores
        are equal (no variance, no evidence).

    >>> same = ScoreMoments(500, 0.8, 0.16)
    >>> drop_test(same, same, higher_is_better=True, max_drop=0.0, mixture_scale=0.1).p_value
    1.0

    """
    if min(candidate.count, baseline.count) < 2:
        return None
    if max_drop < 0 or mixture_scale <= 0:
        raise InvalidInput("max_drop must be >= 0 and mixture_scale > 0")
    pooled = candidate.pooled_with(baseline).variance
    if pooled <= 0:
        return None
    error = math.sqrt(
        max(candidate.variance, pooled) / candidate.count
        + max(baseline.variance, pooled) / baseline.count
    )
    difference = candidate.mean - baseline.mean
    drop = -difference if higher_is_better else difference
    z = (drop - max_drop) / error
    information_ratio = mixture_scale * mixture_scale * pooled / (error * error)
    return DropTest(drop, error, z, mixture_log_likelihood_ratio(z, information_ratio))


def mixture_log_likelihood_ratio(z: float, information_ratio: float) -> float:
    """The log Λ of the one-sided normal mixture at standardised excess drop ``z``.

    Args:
        z: ``(drop - max_drop) / standard_error``.
        information_ratio: ``r = τ² / standard_error²``, the mixing variance in
            units of the estimate's variance; it grows linearly with the samples.

    With no evidence (z = 0) Λ = 1 / √(1 + r); a large z crosses ``log(1 / alpha)``:

    >>> round(mixture_log_likelihood_ratio(0.0, 3.0), 4)
    -0.6931
    >>> mixture_log_likelihood_ratio(3.0, 8.0) > math.log(1 / 0.05)
    True
    >>> mixture_log_likelihood_ratio(-50.0, 8.0) < -5  # much better: no evidence at all
    True

    """
    shrink = information_ratio / (1.0 + information_ratio)
    return (
        _LOG_2
        + _log_normal_cdf(z * math.sqrt(shrink))
        + 0.5 * z * z * shrink
        - 0.5 * math.log1p(information_ratio)
    )


def _log_normal_cdf(u: float) -> float:
    """The log of Φ(u), accurate far into the lower tail (where Φ underflows)."""
    if u > _LOG_CDF_ASYMPTOTIC_BELOW:
        return math.log(0.5 * math.erfc(-u / math.sqrt(2.0)))
    # Mills ratio: Φ(u) ≈ φ(u) / -u · (1 - 1/u²) for u → -∞.
    return -0.5 * u * u - math.log(-u) - 0.5 * math.log(2.0 * math.pi) + math.log1p(-1.0 / (u * u))
