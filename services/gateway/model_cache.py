"""What the gateway serves: per model its schema, deployment and loaded versions.

The cache is plain state owned by the event loop: requests read it, the
registry-event and model-update consumers replace its entries. A swap is one
dict assignment of a frozen value, so a request sees the old entry or the new
one, never half of each. River's ``predict_one`` is synchronous and fast, so
requests call it inline; the expensive part of a swap (unpickling) happens
before the assignment, off the event loop.

Live updates are verified and planned by
:mod:`headwater.services.gateway.live_updates`; the cache keeps the newest
verified update of each model for a deployment still on its way. Installing a
deployment forgets a remembered update whose base version it no longer routes
(one newer than every routed version is kept: its deployment may still be on
its way).
"""

from __future__ import annotations

from collections.abc import Mapping
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


@dataclass
class ModelCache:
    """The models a gateway serves (see the module docstring)."""

    _entries: dict[str, ModelEntry] = field(default_factory=dict)
    _known: set[str] = field(default_factory=set)
    _pending: dict[str, events_pb2.ModelUpdate] = field(default_factory=dict)

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
        """OIP ModelReady: the model has a live route and, when given, ``version`` is loaded.

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
        """Serve ``entry`` unless a newer deployment revision is already served."""
        current = self._entries.get(entry.name)
        if current is not None and current.revision > entry.revision:
            return False
        self._known.add(entry.name)
        self._entries[entry.name] = entry
        kept = self._pending.get(entry.name)
        if kept is not None and _obsolete(kept.base_version, entry.routes.versions):
            del self._pending[entry.name]
        return True

    def remove(self, name: str, revision: int) -> bool:
        """Stop serving ``name`` (undeployed) unless a newer revision is served."""
        current = self._entries.get(name)
        if current is None or current.revision > revision:
            return False
        del self._entries[name]
        return True

    def reusable(self, name: str, version: int, live: bool) -> ServedVersion | None:
        """A loaded version a new deployment can keep instead of fetching its artifact.

        A live state is kept only if the new deployment is live too: a pinned
        deployment serves exactly the registry artifact.
        """
        entry = self._entries.get(name)
        served = entry.versions.get(version) if entry is not None else None
        if served is None or (served.live_sequence and not live):
            return None
        return served

    def remember(self, update: events_pb2.ModelUpdate) -> None:
        """Keep a verified update for later installs if it is the model's newest."""
        kept = self._pending.get(update.model)
        if kept is None or update.sequence > kept.sequence:
            self._pending[update.model] = update

    def pending(self, name: str) -> events_pb2.ModelUpdate | None:
        """The remembered (newest) update of a model, or None."""
        return self._pending.get(name)

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
