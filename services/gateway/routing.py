"""Choosing which deployed version answers a request (pure, no I/O).

A deployment holds routes: each a version, a weight and a role. Primary and
canary routes split the traffic by weight; a shadow route predicts the share of
requests its weight gives (1.0: every request) but never answers. The choice is
a pure function of the request key, so a request retried with the same id lands
on the same versions, and the split over many keys follows the weights.

>>> table = RouteTable.of([Route(1, 0.9, PRIMARY), Route(2, 0.1, CANARY), Route(3, 1.0, SHADOW)])
>>> table.choose("request-42").answer.version in (1, 2)
True
>>> [r.version for r in table.choose("request-42").shadows]
[3]
>>> table.choose("request-42") == table.choose("request-42")
True
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from headwater.shared.errors import ModelNotReady
from headwater.shared.pb import registry_pb2

PRIMARY: int = registry_pb2.ROUTE_ROLE_PRIMARY
CANARY: int = registry_pb2.ROUTE_ROLE_CANARY
SHADOW: int = registry_pb2.ROUTE_ROLE_SHADOW

_UNIT = float(2**64)


@dataclass(frozen=True)
class Route:
    """One deployed version, its share of live traffic and its role.

    Attributes:
        version: The registry version served by this route.
        weight: Share of live traffic in [0, 1]; for a shadow route, the share mirrored.
        role: A ``registry_pb2.RouteRole`` value (primary, canary or shadow).

    """

    version: int
    weight: float
    role: int

    @classmethod
    def from_proto(cls, route: registry_pb2.Route) -> Route:
        """Build a route from its registry message."""
        return cls(version=route.version, weight=route.weight, role=route.role)


@dataclass(frozen=True)
class RouteChoice:
    """The route that answers a request and the shadow routes that also predict it."""

    answer: Route
    shadows: tuple[Route, ...]


def uniform(key: str) -> float:
    """Map a request key to a number in [0, 1), the same for the same key.

    >>> uniform("abc") == uniform("abc")
    True
    >>> 0.0 <= uniform("") < 1.0
    True
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _UNIT


@dataclass(frozen=True)
class RouteTable:
    """The routes of one deployment, ready to choose from.

    Attributes:
        live: Routes that may answer (primary and canary), in deployment order.
        shadows: Routes that predict (a share of) requests but never answer.
        bounds: Cumulative normalised weights of ``live``; the last is 1.0.

    """

    live: tuple[Route, ...]
    shadows: tuple[Route, ...]
    bounds: tuple[float, ...]

    @classmethod
    def of(cls, routes: Iterable[Route]) -> RouteTable:
        """Split routes by role and normalise the live weights.

        Weights are normalised so they sum to 1; when every live weight is 0
        (e.g. a single route whose weight was left unset) the split is even.

        >>> RouteTable.of([Route(1, 0.0, PRIMARY)]).bounds
        (1.0,)
        >>> RouteTable.of([Route(1, 3.0, PRIMARY), Route(2, 1.0, CANARY)]).bounds
        (0.75, 1.0)
        """
        routes = tuple(routes)
        live = tuple(r for r in routes if r.role != SHADOW)
        shadows = tuple(r for r in routes if r.role == SHADOW)
        return cls(live=live, shadows=shadows, bounds=_bounds([max(r.weight, 0.0) for r in live]))

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version the table serves, live first, without duplicates.

        >>> RouteTable.of([Route(2, 1.0, PRIMARY), Route(2, 1.0, SHADOW)]).versions
        (2,)
        """
        return tuple(dict.fromkeys(r.version for r in (*self.live, *self.shadows)))

    def choose(self, key: str) -> RouteChoice:
        """Choose the answering route for ``key`` by weight, and the shadows mirroring it.

        Whether a shadow mirrors a key is drawn independently of the answering
        route (the key is salted with the shadow's version).

        >>> table = RouteTable.of([Route(1, 0.5, PRIMARY), Route(2, 0.5, CANARY)])
        >>> shares = [table.choose(str(i)).answer.version for i in range(10_000)]
        >>> 0.47 < shares.count(1) / len(shares) < 0.53
        True
        >>> RouteTable.of([Route(1, 1.0, SHADOW)]).choose("k")
        Traceback (most recent call last):
        ...
        headwater.shared.errors.ModelNotReady: the deployment has no primary or canary route

        Raises:
            ModelNotReady: The deployment has no live route.

        """
        if not self.live:
            raise ModelNotReady("the deployment has no primary or canary route")
        index = bisect.bisect_right(self.bounds, uniform(key))
        answer = self.live[min(index, len(self.live) - 1)]
        shadows = tuple(
            s
            for s in self.shadows
            if s.version != answer.version and uniform(f"{key}/shadow/{s.version}") < s.weight
        )
        return RouteChoice(answer=answer, shadows=shadows)

    def route_for(self, version: int) -> Route | None:
        """The route serving ``version``, live routes first, or None.

        >>> table = RouteTable.of([Route(1, 1.0, PRIMARY), Route(2, 0.0, SHADOW)])
        >>> table.route_for(2).role == SHADOW
        True
        """
        for route in (*self.live, *self.shadows):
            if route.version == version:
                return route
        return None


def _bounds(weights: Sequence[float]) -> tuple[float, ...]:
    if not weights:
        return ()
    total = sum(weights)
    if total <= 0:
        weights = [1.0] * len(weights)
        total = float(len(weights))
    bounds: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight
        bounds.append(running / total)
    bounds[-1] = 1.0
    return tuple(bounds)
