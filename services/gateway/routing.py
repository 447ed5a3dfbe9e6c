"""Choosing which deployed version answers a request (pure, no I/O).

A deployment holds routes: each a version, a weight and a role. Primary and
canary routes answer, split by weight; a shadow route predicts the share of
requests its weight gives (1.0: every request) after the answer, never
answering; a challenger is loaded (and learns) but serves nothing. The choice
is a pure function of the request's routing key, so the same key lands on the
same versions while the weights stand.

The key's hash (:func:`routing_key_hash`, the first 8 bytes of its blake2b) read
as a fraction of 2**64 is its bucket in [0, 1). Canaries own the low end of the
bucket range in ascending version order (``[0, w1)``, ``[w1, w1 + w2)``, ...),
the primary the rest, so raising a canary's weight only ever moves keys from
the primary to that canary: a key on the canary at 5 % stays on it at 25, 50
and 100 %.

>>> table = RouteTable.of([Route(1, 0.9, PRIMARY), Route(2, 0.1, CANARY), Route(3, 1.0, SHADOW)])
>>> table.choose("request-42").answer.version in (1, 2)
True
>>> [r.version for r in table.choose("request-42").shadows]
[3]
>>> table.choose("request-42") == table.choose("request-42")
True
>>> key = next(k for k in map(str, range(1000)) if uniform(k) < 0.05)
>>> steps = [[Route(1, 1 - w, PRIMARY), Route(2, w, CANARY)] for w in (0.05, 0.25, 0.5, 1.0)]
>>> [RouteTable.of(routes).choose(key).answer.version for routes in steps]
[2, 2, 2, 2]
"""

from __future__ import annotations

import bisect
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from headwater.shared.errors import InvalidInput, ModelNotReady
from headwater.shared.pb import oip_pb2, registry_pb2

PRIMARY: int = registry_pb2.ROUTE_ROLE_PRIMARY
CANARY: int = registry_pb2.ROUTE_ROLE_CANARY
SHADOW: int = registry_pb2.ROUTE_ROLE_SHADOW
CHALLENGER: int = registry_pb2.ROUTE_ROLE_CHALLENGER

_UNIT = float(2**64)
_ROLE_NAMES = {PRIMARY: "primary", CANARY: "canary", SHADOW: "shadow", CHALLENGER: "challenger"}
#: Salts a key for the shadows' draw, independent of the answering route's.
SHADOW_SALT = "shadow:"
#: The OIP request parameter naming the routing key.
PARAM_ROUTING_KEY = "routing_key"


def role_name(role: int) -> str:
    """The lower-case name of a route role (metrics labels, response parameters).

    >>> role_name(CANARY), role_name(0)
    ('canary', 'unspecified')
    """
    return _ROLE_NAMES.get(role, "unspecified")


@dataclass(frozen=True)
class Route:
    """One deployed version, its share of live traffic and its role.

    Attributes:
        version: The registry version served by this route.
        weight: Share of live traffic in [0, 1]; for a shadow route, the share mirrored.
        role: A ``registry_pb2.RouteRole`` value (primary, canary, shadow or challenger).

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
    """The route that answers a request, the shadows that mirror it, and its key's hash.

    Attributes:
        answer: The route whose version answers.
        shadows: The shadow routes that predict the same rows after the answer.
        key_hash: :func:`routing_key_hash` of the request's routing key.

    """

    answer: Route
    shadows: tuple[Route, ...]
    key_hash: str


def routing_key_hash(key: str) -> str:
    """The first 8 bytes of blake2b (64-byte digest) of the UTF-8 key, as 16 hex chars.

    It is what a PredictionEvent carries as ``routing_key_hash``, and the bucket
    of the key is this number over 2**64 (:func:`bucket`).

    >>> routing_key_hash("user-7") == routing_key_hash("user-7")
    True
    >>> len(routing_key_hash(""))
    16
    """
    return hashlib.blake2b(key.encode("utf-8")).digest()[:8].hex()


def routing_key(request: oip_pb2.ModelInferRequest) -> str:
    """The key a request is routed by: parameter ``routing_key``, else its ``id``, else fresh.

    >>> request = oip_pb2.ModelInferRequest(id="r-1")
    >>> routing_key(request)
    'r-1'
    >>> request.parameters["routing_key"].string_param = "user-7"
    >>> routing_key(request)
    'user-7'
    >>> request.parameters["routing_key"].bool_param = True
    >>> routing_key(request)
    Traceback (most recent call last):
    ...
    headwater.shared.errors.InvalidInput: parameter 'routing_key' must be a string, got bool_param

    Raises:
        InvalidInput: ``routing_key`` is given but is not a string (or an int64).

    """
    if PARAM_ROUTING_KEY in request.parameters:
        parameter = request.parameters[PARAM_ROUTING_KEY]
        kind = parameter.WhichOneof("parameter_choice")
        if kind == "int64_param":
            return str(parameter.int64_param)
        if kind != "string_param":
            raise InvalidInput(f"parameter '{PARAM_ROUTING_KEY}' must be a string, got {kind}")
        if parameter.string_param:
            return parameter.string_param
    return request.id or uuid.uuid4().hex


def bucket(key_hash: str) -> float:
    """The bucket in [0, 1) of a key given its :func:`routing_key_hash`.

    >>> bucket("0000000000000000"), bucket("8000000000000000")
    (0.0, 0.5)
    """
    return int(key_hash, 16) / _UNIT


def uniform(key: str) -> float:
    """Map a request key to its bucket in [0, 1), the same for the same key.

    >>> uniform("abc") == uniform("abc")
    True
    >>> 0.0 <= uniform("") < 1.0
    True
    """
    return bucket(routing_key_hash(key))


@dataclass(frozen=True)
class RouteTable:
    """The routes of one deployment, ready to choose from.

    Attributes:
        routes: Every route, in deployment order.
        answering: Routes that may answer, in bucket order: canaries by ascending
            version, then the primary.
        bounds: Upper end of each answering route's bucket range; the last is 1.0.
        shadows: Routes that predict (a share of) requests but never answer.
        challengers: Routes that are loaded but serve no traffic.

    """

    routes: tuple[Route, ...]
    answering: tuple[Route, ...]
    bounds: tuple[float, ...]
    shadows: tuple[Route, ...]
    challengers: tuple[Route, ...]

    @classmethod
    def of(cls, routes: Iterable[Route]) -> RouteTable:
        """Split routes by role and lay the answering ones out on the bucket range.

        Weights are normalised by their sum (the registry keeps it at 1); when
        every answering weight is 0 (a single route whose weight was left unset)
        the primary takes everything. A zero-weight primary next to a full
        canary answers nothing. A route without a role counts as a primary.

        >>> RouteTable.of([Route(1, 0.0, PRIMARY)]).bounds
        (1.0,)
        >>> RouteTable.of([Route(1, 3.0, PRIMARY), Route(2, 1.0, CANARY)]).bounds
        (0.25, 1.0)
        >>> table = RouteTable.of([Route(1, 0.0, PRIMARY), Route(2, 1.0, CANARY)])
        >>> [r.version for r in table.answering], table.bounds
        ([2, 1], (1.0, 1.0))
        """
        routes = tuple(routes)
        canaries = sorted((r for r in routes if r.role == CANARY), key=lambda r: r.version)
        primaries = [r for r in routes if r.role not in (CANARY, SHADOW, CHALLENGER)]
        answering = (*canaries, *primaries)
        return cls(
            routes=routes,
            answering=answering,
            bounds=_bounds([max(r.weight, 0.0) for r in answering], len(canaries)),
            shadows=tuple(r for r in routes if r.role == SHADOW),
            challengers=tuple(r for r in routes if r.role == CHALLENGER),
        )

    @property
    def versions(self) -> tuple[int, ...]:
        """Every version the table routes (all loaded), in deployment order, once each.

        >>> RouteTable.of([Route(2, 1.0, PRIMARY), Route(2, 1.0, SHADOW)]).versions
        (2,)
        """
        return tuple(dict.fromkeys(r.version for r in self.routes))

    def choose(self, key: str) -> RouteChoice:
        """Choose the answering route for ``key`` by weight, and the shadows mirroring it.

        Whether the shadows mirror a key is drawn independently of the answering
        route (from the bucket of ``"shadow:" + key``).

        >>> table = RouteTable.of([Route(1, 0.5, PRIMARY), Route(2, 0.5, CANARY)])
        >>> shares = [table.choose(str(i)).answer.version for i in range(10_000)]
        >>> 0.47 < shares.count(1) / len(shares) < 0.53
        True
        >>> RouteTable.of([Route(1, 1.0, SHADOW)]).choose("k")
        Traceback (most recent call last):
        ...
        headwater.shared.errors.ModelNotReady: the deployment has no primary or canary route

        Raises:
            ModelNotReady: The deployment has no answering route.

        """
        if not self.answering:
            raise ModelNotReady("the deployment has no primary or canary route")
        key_hash = routing_key_hash(key)
        index = bisect.bisect_right(self.bounds, bucket(key_hash))
        answer = self.answering[min(index, len(self.answering) - 1)]
        shadows: tuple[Route, ...] = ()
        if self.shadows:
            draw = uniform(SHADOW_SALT + key)
            shadows = tuple(
                s for s in self.shadows if s.version != answer.version and draw < s.weight
            )
        return RouteChoice(answer=answer, shadows=shadows, key_hash=key_hash)

    def answering_only(self, version: int) -> RouteTable:
        """The table of a replica told to answer every request with ``version``.

        A rolling rollout tells each gateway replica which version it answers
        with: ``version`` becomes the only primary, with all the weight; every
        other primary or canary becomes a challenger (loaded and learning,
        answering nothing); shadows and challengers stay. When ``version`` has
        no route but a shadow's, the table is kept as it is.

        >>> table = RouteTable.of([Route(1, 1.0, PRIMARY), Route(2, 0.0, CHALLENGER)])
        >>> told = table.answering_only(2)
        >>> told.choose("any key").answer, told.challengers
        (Route(version=2, weight=1.0, role=1), (Route(version=1, weight=0.0, role=4),))
        >>> table.answering_only(1) == table, table.answering_only(3) == table
        (True, True)
        """
        if not any(r.version == version and r.role != SHADOW for r in self.routes):
            return self
        told = (
            r if r.role == SHADOW
            else Route(version, 1.0, PRIMARY) if r.version == version
            else r if r.role == CHALLENGER
            else Route(r.version, 0.0, CHALLENGER)
            for r in self.routes
        )  # fmt: skip
        return RouteTable.of(told)

    def route_for(self, version: int) -> Route | None:
        """The route serving ``version`` (answering routes first), or None.

        >>> table = RouteTable.of([Route(1, 1.0, PRIMARY), Route(2, 0.0, SHADOW)])
        >>> table.route_for(2).role == SHADOW
        True
        """
        for route in (*self.answering, *self.challengers, *self.shadows):
            if route.version == version:
                return route
        return None


def _bounds(weights: Sequence[float], canaries: int) -> tuple[float, ...]:
    """Cumulative normalised weights; with no weight at all the primaries share evenly.

    >>> _bounds([0.0, 0.0], canaries=1)
    (0.0, 1.0)
    >>> _bounds([0.05, 0.25, 0.7], canaries=2)
    (0.05, 0.3, 1.0)
    """
    if not weights:
        return ()
    total = sum(weights)
    if total <= 0:
        shared = len(weights) - canaries or len(weights)
        weights = [0.0] * (len(weights) - shared) + [1.0] * shared
        total = float(shared)
    bounds: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight
        bounds.append(min(running / total, 1.0))
    bounds[-1] = 1.0
    return tuple(bounds)
