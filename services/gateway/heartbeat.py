"""The replica's heartbeat: tell the registry what is loaded, answer as it says back.

Every ``heartbeat_s`` the gateway reports its replica id, its address and
every version it has in memory: a routed version is ``ready`` once it has
been warmed up, a version kept for its unload grace is not. A version is
warmed up once, when first seen loaded: a few predictions on a synthetic row
built from the model's schema, whose median latency is reported with it (the
promotion gates judge a version's latency budget by it).

The answer says, for each model a rolling rollout is switching replica by
replica, which version this replica answers with while the deployment stays
at the revision it names (:class:`~.model_cache.Override`). When the registry
is unreachable the heartbeat is logged and retried at the next one; serving
goes on with the overrides last received (they expire with their revision).

>>> from headwater.shared.features import FeatureSpec
>>> synthetic_row(FeatureSchema((FeatureSpec("x", "float"), FeatureSpec("plan", "str", False))))
{'x': 0.0, 'plan': ''}
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from headwater.services.gateway import metrics
from headwater.services.gateway.model_cache import ModelCache, ModelEntry, Override, ServedVersion
from headwater.services.gateway.service import predict
from headwater.shared.errors import HeadwaterError
from headwater.shared.features import FeatureSchema, FeatureValue
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import replica_version

log = logging.getLogger(__name__)

#: Predictions one warm-up makes (their median latency is reported).
WARMUP_PREDICTIONS = 5
_ZERO: dict[str, FeatureValue] = {"float": 0.0, "int": 0, "str": "", "bool": False}


class HeartbeatRegistry(Protocol):
    """What the heartbeat needs of the registry client (``RegistryClient`` fits)."""

    async def heartbeat(
        self, replica_id: str, address: str, versions: Iterable[registry_pb2.ReplicaVersion]
    ) -> registry_pb2.HeartbeatResponse:
        """Report the replica; its assignments."""


def synthetic_row(schema: FeatureSchema) -> dict[str, FeatureValue]:
    """A row holding every feature of the schema at the zero of its type."""
    return {feature.name: _ZERO[feature.type] for feature in schema.features}


def warmup_latency_ms(
    estimator: Any,
    row: dict[str, FeatureValue],
    classifier: bool,
    predictions: int = WARMUP_PREDICTIONS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The median latency, in ms, of ``predictions`` predictions of ``row``.

    >>> from river import linear_model
    >>> warmup_latency_ms(linear_model.LinearRegression(), {"x": 0.0}, classifier=False) >= 0
    True
    """
    latencies = []
    for _ in range(predictions):
        started = clock()
        predict(estimator, row, classifier)
        latencies.append((clock() - started) * 1000)
    return statistics.median(latencies)


def overrides_of(response: registry_pb2.HeartbeatResponse) -> dict[str, Override]:
    """Model -> the version this replica answers with, from a heartbeat's answer.

    >>> answer = registry_pb2.HeartbeatResponse(assignments=[
    ...     registry_pb2.ReplicaAssignment(model="m", version=2, deployment_revision=7)])
    >>> overrides_of(answer)
    {'m': Override(version=2, revision=7)}
    """
    return {a.model: Override(a.version, a.deployment_revision) for a in response.assignments}


class ReplicaHeartbeat:
    """Reports this replica every ``interval_s`` and applies the registry's answer.

    Args:
        cache: The served models (reported, and told how to answer).
        registry: Takes the heartbeats.
        replica_id: Names this replica.
        address: The address to advertise (called at every beat: the port is bound late).
        interval_s: Time between two heartbeats.

    """

    def __init__(
        self,
        cache: ModelCache,
        registry: HeartbeatRegistry,
        replica_id: str,
        address: Callable[[], str],
        interval_s: float,
    ) -> None:
        self.replica_id = replica_id
        self._cache = cache
        self._registry = registry
        self._address = address
        self._interval_s = interval_s
        self._warmups: dict[tuple[str, int], float] = {}
        self._failed_warmups: set[tuple[str, int]] = set()
        self._failing = False

    async def run(self) -> None:
        """Heartbeat until cancelled."""
        while True:
            await self.beat()
            await asyncio.sleep(self._interval_s)

    async def beat(self) -> bool:
        """One heartbeat; False when the registry did not take it (the next one retries)."""
        try:
            versions = self.report()
            answer = await self._registry.heartbeat(self.replica_id, self._address(), versions)
        except Exception as error:  # unreachable, refused, or a bug: serving goes on regardless
            metrics.HEARTBEAT_FAILURES.inc()
            if not self._failing:  # once per outage: a beat every few seconds would flood
                log.warning(
                    "heartbeat failed; retrying",
                    extra={"error": str(error)},
                    exc_info=not isinstance(error, HeadwaterError),
                )
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat taken again", extra={"replica": self.replica_id})
        self._failing = False
        for name in self._cache.set_overrides(overrides_of(answer)):
            entry = self._cache.get(name)
            answering = [r.version for r in entry.routes.answering]
            log.info("rolling assignment applied", extra={"model": name, "answering": answering})
        return True

    def report(self) -> list[registry_pb2.ReplicaVersion]:
        """Every version in memory, ready (routed and warmed up) or not; warms up new ones."""
        reported = []
        for entry in self._cache.entries():
            for version, served in entry.versions.items():
                latency = self._warmed(entry, served)
                reported.append(
                    replica_version(
                        entry.name, version, ready=latency is not None,
                        warmup_latency_ms=latency or 0.0,
                    )
                )  # fmt: skip
            retired = (v for v in self._cache.loaded(entry.name) if v not in entry.versions)
            for version in retired:
                latency = self._warmups.get((entry.name, version), 0.0)
                reported.append(
                    replica_version(entry.name, version, ready=False, warmup_latency_ms=latency)
                )
        in_memory = {(v.model, v.version) for v in reported}
        for key in self._warmups.keys() - in_memory:  # unloaded: warmed up again if it returns
            del self._warmups[key]
        self._failed_warmups &= in_memory
        return reported

    def _warmed(self, entry: ModelEntry, served: ServedVersion) -> float | None:
        """The version's warm-up latency, warming it up first if new (None: it failed)."""
        key = (entry.name, served.version)
        if key in self._warmups:
            return self._warmups[key]
        try:
            latency = warmup_latency_ms(
                served.estimator, synthetic_row(entry.schema), entry.classifier
            )
        except Exception:  # a model failing on the zero row is not ready; retried next beat
            if key not in self._failed_warmups:
                log.exception("warm-up failed", extra={"model": key[0], "version": key[1]})
            self._failed_warmups.add(key)
            return None
        self._warmups[key] = latency
        log.info("version warmed up", extra={"model": key[0], "version": key[1], "ms": latency})
        return latency
