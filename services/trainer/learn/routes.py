"""Which learners a deployment asks for, and what a deployment change does to them (pure).

Every version a model's deployment routes to, in any role (primary, also at
weight 0, canary, shadow, challenger), has its own learner, named by a
:class:`LearnerId` ``(model, version)``. When the routes change
(:func:`plan_route_change`), a learner whose version is still routed goes on
(a canary promoted to primary keeps learning: only its role changed); one whose
route went away, and whose own checkpoint the new routes deploy instead, is
rebased onto that checkpoint (it keeps its state, which already holds the
checkpoint); every other one whose route went away is retired (a final save,
then it stops); a newly routed version gets a learner at its first use.

>>> d = registry_pb2.Deployment(model="churn", routes=[
...     registry_pb2.Route(version=2, weight=0.0, role=registry_pb2.ROUTE_ROLE_PRIMARY),
...     registry_pb2.Route(version=3, weight=1.0, role=registry_pb2.ROUTE_ROLE_CANARY)])
>>> routed_versions(d)
{2: 'primary', 3: 'canary'}
>>> primary_of(routed_versions(d)), str(LearnerId("churn", 3))
(2, 'churn/3')
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from headwater.shared import enums
from headwater.shared.pb import registry_pb2

#: The role names of :data:`headwater.shared.enums.ROLES`; a route without one is "unspecified".
PRIMARY = "primary"
UNSPECIFIED = "unspecified"


@dataclass(frozen=True, order=True)
class LearnerId:
    """A learner's identity: the model and the version it learns on (its base version).

    ``str()`` of it is its ``model-updates`` record key,
    :func:`headwater.shared.model_updates.update_key`.
    """

    model: str
    version: int

    def __str__(self) -> str:
        return f"{self.model}/{self.version}"


def routed_versions(deployment: registry_pb2.Deployment) -> dict[int, str]:
    """Every version the deployment routes to, with its role's name (sorted by version).

    A version routed twice (the registry forbids it) keeps the role of its first route.

    >>> routed_versions(registry_pb2.Deployment())
    {}
    """
    routes: dict[int, str] = {}
    for route in deployment.routes:
        routes.setdefault(route.version, enums.ROLES.get(route.role, UNSPECIFIED))
    return dict(sorted(routes.items()))


def primary_of(routes: Mapping[int, str]) -> int | None:
    """The primary route's version, None without one.

    >>> primary_of({4: "challenger"}) is None
    True
    """
    return next((version for version, role in routes.items() if role == PRIMARY), None)


@dataclass(frozen=True)
class RouteChange:
    """What a change of a model's routes does to its learners.

    Attributes:
        rebased: ``(from, onto)``: the learner of version ``from`` continues as the
            learner of ``onto``, a checkpoint it registered.
        retired: Versions whose learner saves one last time and stops.
        started: Newly routed versions without a learner yet (loaded at first use).
        kept: Versions whose learner goes on, maybe in another role.

    """

    rebased: tuple[tuple[int, int], ...] = ()
    retired: tuple[int, ...] = ()
    started: tuple[int, ...] = ()
    kept: tuple[int, ...] = ()


def plan_route_change(
    learning: Mapping[int, Collection[int]], routed: Collection[int]
) -> RouteChange:
    """What happens to the learners when the model's routed versions become ``routed``.

    Args:
        learning: Each version that has a learner, with the checkpoint versions
            that learner registered.
        routed: The versions the new deployment routes to.

    A canary promoted (same version, now primary) is kept; a rolled-back canary
    is retired; a route moved onto its own learner's checkpoint rebases it:

    >>> plan_route_change({2: [], 3: []}, [3])
    RouteChange(rebased=(), retired=(2,), started=(), kept=(3,))
    >>> plan_route_change({2: [], 3: [7]}, [2])
    RouteChange(rebased=(), retired=(3,), started=(), kept=(2,))
    >>> plan_route_change({2: [7]}, [7, 9])
    RouteChange(rebased=((2, 7),), retired=(), started=(9,), kept=())

    A checkpoint routed next to the version that made it is a learner of its own
    (its maker still learns for its own route):

    >>> plan_route_change({2: [7]}, [2, 7])
    RouteChange(rebased=(), retired=(), started=(7,), kept=(2,))

    """
    gone = sorted(set(learning) - set(routed))
    rebased: list[tuple[int, int]] = []
    started: list[int] = []
    for version in sorted(set(routed) - set(learning)):
        maker = next((old for old in gone if version in learning[old]), None)
        if maker is None:
            started.append(version)
            continue
        gone.remove(maker)
        rebased.append((maker, version))
    return RouteChange(
        rebased=tuple(rebased),
        retired=tuple(gone),
        started=tuple(started),
        kept=tuple(sorted(set(learning) & set(routed))),
    )
