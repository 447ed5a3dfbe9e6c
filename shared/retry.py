"""The one retry policy: capped exponential backoff, optionally jittered.

Every loop that waits before trying again asks a :class:`Backoff` how long.
The loops themselves stay where they are, because each has its own reason to
stop (a deadline, a stop flag, a newer revision, a record to seek back to);
only the delay between attempts is shared.

>>> backoff = Backoff(initial_s=0.1, max_s=1.0)
>>> [backoff.delay_s(attempt) for attempt in range(6)]
[0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
>>> Backoff(initial_s=0.1).delay_s(10_000)  # no cap, no overflow
inf

With jitter, each delay is drawn uniformly from ``[(1 - jitter) * d, d]``, so
replicas that failed together do not retry together:

>>> jittered = Backoff(initial_s=0.1, max_s=2.0, jitter=0.5)
>>> all(0.2 <= jittered.delay_s(2) <= 0.4 for _ in range(100))
True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: ``initial_s * factor ** attempt``, at most ``max_s``.

    >>> Backoff(initial_s=0.1, factor=0.5)
    Traceback (most recent call last):
    ...
    ValueError: factor must be at least 1, got 0.5

    Attributes:
        initial_s: Delay before the second attempt (attempt 0 failed), in seconds.
        max_s: Cap of every delay, in seconds (infinite: uncapped).
        factor: Growth of the delay per failed attempt.
        jitter: Fraction of each delay that is random (0: none, 1: anywhere in ``[0, d]``).

    """

    initial_s: float
    max_s: float = math.inf
    factor: float = 2.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s <= 0:
            raise ValueError(f"delays must be positive, got {self.initial_s} and {self.max_s}")
        if self.factor < 1:
            raise ValueError(f"factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def delay_s(self, attempt: int) -> float:
        """How long to wait after failed attempt number ``attempt`` (counted from 0).

        >>> Backoff(initial_s=0.05, max_s=0.01).delay_s(0)  # the cap wins over the start
        0.01
        """
        try:
            grown = self.initial_s * self.factor**attempt
        except OverflowError:  # the cap was reached long before
            grown = math.inf
        capped = min(self.max_s, grown)
        if self.jitter:
            return capped * random.uniform(1.0 - self.jitter, 1.0)
        return capped
