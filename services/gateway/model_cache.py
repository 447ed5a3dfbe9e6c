"""What the gateway serves: per model its schema, deployment and loaded versions.

The cache is plain state owned by the event loop: requests read it, the
registry-event and model-update consumers replace its entries. A swap is one
dict assignment of a frozen value, so a request sees the old entry (routes and
versions) or the new one, never half of each. River's ``predict_one`` is
synchronous and fast, so requests call it inline; the expensive part of a swap
(unpickling) happens before the assignment, off the event loop.

Every routed version is loaded, whatever its role (a challenger and a
zero-weight primary answer nothing but stay warm). A version a new deployment
no longer routes is retired, not dropped: it stays loaded for
``unload_grace_s`` so a rollback right after a switch reuses it at once
(:meth:`ModelCache.reusable`), then :meth:`ModelCache.sweep` unloads it.

A rolling rollout tells each replica, through its heartbeat
(:mod:`headwater.services.gateway.heartbeat`), which version it answers with:
an :class:`Override`, which holds for one deployment revision only, and only
for a version the deployment routes (so it never needs a load). Any later
deployment change supersedes it at once, without waiting for the next
heartbeat.

Live updates are verified and planned by
:mod:`headwater.services.gateway.live_updates`; the cache keeps the newest
verified update of each (model, base version), one per learner, for a
deployment still on its way. Installing a deployment forgets the remembered
updates whose base version it no longer routes, except a few newer than every
routed version (their deployment may still be on their way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from headwater.services.gateway.outputs import predict_datatype
from headwater.services.gateway.routing import Route, RouteTable
from headwater.shared.errors import ModelNotFound, ModelNotReady
from headwater.shared.features import FeatureSchema
from headwater.shared.pb import events_pb2, registry_pb2

CLASSIFIER_TASKS = frozenset({registry_pb2.TASK_BINARY, registry_pb2.TASK_MULTICLASS})


@dataclass(frozen=True)
class ServedVersion:
    """One loaded version of a model.

    Attributes:
        version: The registry version number.
        estimator: The River estimator answering for it.
        live_sequence: Sequence of the live update in use; 0 for the registry artifact.

    """

    version: int
    estimator: Any
    live_sequence: int = 0


@dataclass(frozen=True)
class Override:
    """The version this replica was told to answer with, while one deployment revision stands.

    Attributes:
        version: The version that answers every request (a routed one).
        revision: The deployment revision the override was computed against.

    """

    version: int
    revision: int


@dataclass(frozen=True)
class ModelEntry:
    """A deployed model, ready to serve.

    Attributes:
        model: The registry model: name, task and ordered feature schema.
        schema: The model's features, ready to validate inputs against.
        deployment: The deployment being served.
        routes: The deployment's routes, ready to choose from.
        versions: Every version the routes name, loaded.

    """

    model: registry_pb2.Model
    schema: FeatureSchema
    deployment: registry_pb2.Deployment
    routes: RouteTable
    versions: Mapping[int, ServedVersion]

    @classmethod
    def build(
        cls,
        model: registry_pb2.Model,
        deployment: registry_pb2.Deployment,
        versions: Mapping[int, ServedVersion],
    ) -> ModelEntry:
        """Assemble an entry; every routed version must be in ``versions``.

        Raises:
            InvalidInput: The model's feature schema is invalid.
            ValueError: A routed version is missing from ``versions``.

        """
        routes = RouteTable.of(Route.from_proto(r) for r in deployment.routes)
        missing = [v for v in routes.versions if v not in versions]
        if missing:
            raise ValueError(f"versions {missing} of {model.name!r} are routed but not loaded")
        schema = FeatureSchema.from_proto(model)
        return cls(model, schema, deployment, routes, MappingProxyType(dict(versions)))

    def with_override(self, override: Override | None) -> ModelEntry:
        """The entry answering as ``override`` says when it holds, else as deployed.

        It holds when it names this deployment's revision and a routed version.
        """
        routes = RouteTable.of(Route.from_proto(r) for r in self.deployment.routes)
        if (
            override is not None
            and override.revision == self.revision
            and override.version in self.versions
        ):
            routes = routes.answering_only(override.version)
        return self if routes == self.routes else replace(self, routes=routes)

    @property
    def name(self) -> str:
        """The model name."""
        return self.model.name

    @property
    def revision(self) -> int:
        """The deployment revision."""
        return self.deployment.revision

    @property
    def classifier(self) -> bool:
        """Whether the model is a binary or multiclass classifier."""
        return self.model.task in CLASSIFIER_TASKS

    @property
    def predict_datatype(self) -> str:
        """The datatype of the ``predict`` output, fixed by the task (see outputs.py)."""
        return predict_datatype(self.model.task)

    @property
    def live(self) -> bool:
        """Whether live updates are swapped in (LIVE, and UNSPECIFIED, the online default)."""
        return is_live(self.deployment)


def is_live(deployment: registry_pb2.Deployment) -> bool:
    """Whether a deployment serves live updates: any mode but PINNED.

    >>> is_live(registry_pb2.Deployment(mode=registry_pb2.SERVING_MODE_PINNED))
    False
    >>> is_live(registry_pb2.Deployment())
    True
    """
    return deployment.mode != registry_pb2.SERVING_MODE_PINNED


#: Remembered updates of base versions newer than every routed one, kept per model.
MAX_UNROUTED_UPDATES = 4


@dataclass(frozen=True)
class Retired:
    """A version no longer routed, still loaded until its grace ends.

    Attributes:
        served: The loaded version (with its live state).
        until: When it is unloaded, on the cache's clock.

    """

    served: ServedVersion
    until: float


@dataclass
class ModelCache:
    """The models a gateway serves (see the module docstring).

    Attributes:
        unload_grace_s: How long a version no longer routed stays loaded.
        clock: Monotonic seconds, for the grace.

    """

    unload_grace_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, ModelEntry] = field(default_factory=dict)
    _known: set[str] = field(default_factory=set)
    _pending: dict[str, dict[int, events_pb2.ModelUpdate]] = field(default_factory=dict)
    _retired: dict[str, dict[int, Retired]] = field(default_factory=dict)
    _overrides: dict[str, Override] = field(default_factory=dict)

    def get(self, name: str) -> ModelEntry:
        """The deployed entry of ``name``.

        Raises:
            ModelNotFound: No model of that name is known.
            ModelNotReady: The model exists but is not deployed (or not loaded yet).

        """
        entry = self._entries.get(name)
        if entry is not None:
            return entry
        if name in self._known:
            raise ModelNotReady(f"model '{name}' is not deployed")
        raise ModelNotFound(f"model '{name}' not found")

    def find(self, name: str) -> ModelEntry | None:
        """The deployed entry of ``name``, or None."""
        return self._entries.get(name)

    def ready(self, name: str, version: int | None = None) -> bool:
        """OIP ModelReady: the model has an answering route and, when given, ``version`` is loaded.

        Every routed version is loaded, so a challenger's version is ready too.

        Raises:
            ModelNotFound: No model of that name is known.

        """
        entry = self._entries.get(name)
        if entry is None:
            if name not in self._known:
                raise ModelNotFound(f"model '{name}' not found")
            return False
        if version is not None and version not in entry.versions:
            return False
        return bool(entry.routes.answering)

    def entries(self) -> list[ModelEntry]:
        """Every deployed entry."""
        return list(self._entries.values())

    def loaded(self, name: str) -> tuple[int, ...]:
        """Every version of ``name`` in memory: routed, then retired (in its grace)."""
        entry = self._entries.get(name)
        routed = tuple(entry.versions) if entry is not None else ()
        return (*routed, *sorted(self._retired.get(name, {})))

    def know(self, *names: str) -> None:
        """Record that models exist (so a request for one is UNAVAILABLE, not NOT_FOUND)."""
        self._known.update(names)

    def is_known(self, name: str) -> bool:
        """Whether a model of that name exists, deployed or not."""
        return name in self._known or name in self._entries

    def revision(self, name: str) -> int:
        """The deployment revision served for ``name``; -1 when none."""
        entry = self._entries.get(name)
        return entry.revision if entry is not None else -1

    def install(self, entry: ModelEntry) -> bool:
        """Serve ``entry`` unless a newer deployment revision is already served.

        The versions the previous entry served and ``entry`` does not route are retired.
        """
        current = self._entries.get(entry.name)
        if current is not None and current.revision > entry.revision:
            return False
        self._known.add(entry.name)
        entry = entry.with_override(self._overrides.get(entry.name))
        self._entries[entry.name] = entry  # the one assignment requests see
        retired = self._retired.setdefault(entry.name, {})
        for version in entry.versions:
            retired.pop(version, None)
        if current is not None:
            self._retire(current, keep=entry.versions.keys())
        self._prune_pending(entry.name)
        self.sweep()
        return True

    def set_overrides(self, overrides: Mapping[str, Override]) -> list[str]:
        """Answer as ``overrides`` say (model -> override; the others as deployed).

        Returns:
            The models whose answering routes changed.

        """
        self._overrides = dict(overrides)
        changed = []
        for name, entry in list(self._entries.items()):
            told = entry.with_override(self._overrides.get(name))
            if told is not entry:
                self._entries[name] = told  # one assignment, as in install
                changed.append(name)
        return changed

    def remove(self, name: str, revision: int) -> bool:
        """Stop serving ``name`` (undeployed) unless a newer revision is served."""
        current = self._entries.get(name)
        if current is None or current.revision > revision:
            return False
        del self._entries[name]
        self._retire(current, keep=())
        self.sweep()
        return True

    def _retire(self, entry: ModelEntry, keep: Collection[int]) -> None:
        until = self.clock() + self.unload_grace_s
        retired = self._retired.setdefault(entry.name, {})
        for version, served in entry.versions.items():
            if version not in keep:
                retired[version] = Retired(served, until)

    def sweep(self) -> list[tuple[str, int]]:
        """Unload the retired versions whose grace is over; returns them as (model, version)."""
        now = self.clock()
        unloaded: list[tuple[str, int]] = []
        for name, retired in self._retired.items():
            for version in [v for v, r in retired.items() if r.until <= now]:
                del retired[version]
                unloaded.append((name, version))
        return unloaded

    def reusable(self, name: str, version: int, live: bool) -> ServedVersion | None:
        """A loaded (or retired) version a new deployment can keep instead of fetching it.

        A live state is kept only if the new deployment is live too: a pinned
        deployment serves exactly the registry artifact.
        """
        entry = self._entries.get(name)
        served = entry.versions.get(version) if entry is not None else None
        if served is None:
            retired = self._retired.get(name, {}).get(version)
            served = retired.served if retired is not None else None
        if served is None or (served.live_sequence and not live):
            return None
        return served

    def remember(self, update: events_pb2.ModelUpdate) -> None:
        """Keep a verified update for later installs if it is its learner's newest."""
        kept = self._pending.setdefault(update.model, {})
        newest = kept.get(update.base_version)
        if newest is None or update.sequence > newest.sequence:
            kept[update.base_version] = update
        self._prune_pending(update.model)

    def pending(self, name: str, version: int) -> events_pb2.ModelUpdate | None:
        """The remembered (newest) update of one learner of a model, or None."""
        return self._pending.get(name, {}).get(version)

    def pending_updates(self, name: str) -> tuple[events_pb2.ModelUpdate, ...]:
        """Every remembered update of a model, one per base version, by base version."""
        kept = self._pending.get(name, {})
        return tuple(kept[v] for v in sorted(kept))

    def _prune_pending(self, name: str) -> None:
        kept = self._pending.get(name)
        if not kept:
            return
        entry = self._entries.get(name)
        routed = entry.routes.versions if entry is not None else ()
        waiting = sorted(v for v in kept if v not in routed and not _obsolete(v, routed))
        for version in kept.keys() - set(routed) - set(waiting[-MAX_UNROUTED_UPDATES:]):
            del kept[version]

    def swap_version(self, name: str, served: ServedVersion) -> None:
        """Serve ``served`` (a live state) for its version of ``name``, a served model.

        The caller checked that the update it comes from applies
        (:func:`~headwater.services.gateway.live_updates.plan_update`).
        """
        entry = self._entries[name]
        versions = {**entry.versions, served.version: served}
        self._entries[name] = replace(entry, versions=MappingProxyType(versions))


def _obsolete(base_version: int, routed: tuple[int, ...]) -> bool:
    """Whether a remembered update can no longer apply: its base is older than what is routed.

    >>> _obsolete(2, (3,)), _obsolete(3, (3,)), _obsolete(4, (3,)), _obsolete(1, ())
    (True, False, False, False)
    """
    return bool(routed) and base_version not in routed and base_version < max(routed)
