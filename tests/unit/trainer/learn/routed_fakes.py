"""The learn tests' registry with a deployment of several routes, and helpers for its learners."""

from __future__ import annotations

from typing import Any

from river import linear_model

from headwater.services.trainer.learn.pool import LearnerPool
from headwater.services.trainer.learn.routes import LearnerId
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import ModelNotFound
from headwater.shared.features import features_to_proto, target_to_proto
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import route
from tests.unit.trainer.learn.conftest import CODEC, TOPIC, FakeRegistry, Rejects

MODEL = "m"
PROBE = [{"x": x / 4} for x in range(-4, 5)]


def row(offset: int) -> tuple[dict[str, float], bool]:
    """Example ``offset`` of a learnable stream."""
    x = (offset * 37 % 11 - 5) / 5
    return {"x": x}, x + 0.1 * (offset % 3 - 1) > 0


def start_model(learned: int) -> Any:
    """A distinct starting state per version: a LogisticRegression that learned ``learned`` rows."""
    model = linear_model.LogisticRegression()
    for i in range(learned):
        model.learn_one(*row(1000 + i))
    return model


def answers(model: Any) -> list[dict]:
    """What a model says on the probe rows (two models that learned alike say the same)."""
    return [model.predict_proba_one(x) for x in PROBE]


class RoutedRegistry(FakeRegistry):
    """The learn tests' registry with a deployment of several routes (set by :meth:`deploy`).

    Version 1 is a fresh LogisticRegression, version k one that learned 3(k - 1) rows.
    """

    def __init__(self, versions: int = 3) -> None:
        super().__init__()
        self.deployment = registry_pb2.Deployment(model=MODEL)
        self.broken: set[int] = set()  # versions whose artifact does not verify
        for k in range(1, versions):
            self.add_version(start_model(3 * k))

    def deploy(self, *routes: tuple[int, float, str]) -> events_pb2.RegistryEvent:
        """Set the routes (version, weight, role); the DEPLOYMENT_CHANGED event that says so."""
        self.deployment = registry_pb2.Deployment(
            model=MODEL,
            routes=[route(v, w, r) for v, w, r in routes],
            revision=self.deployment.revision + 1,
        )
        return events_pb2.RegistryEvent(
            model=MODEL,
            kind=events_pb2.REGISTRY_EVENT_KIND_DEPLOYMENT_CHANGED,
            deployment=self.deployment,
        )

    async def get_deployment(self, model: str) -> registry_pb2.Deployment:
        self._check("get_deployment")
        if model != MODEL or not self.deployment.routes:
            raise ModelNotFound(f"model {model!r} has no deployment")
        return self.deployment

    async def get_artifact(self, model: str, ref: int) -> registry_pb2.GetArtifactResponse:
        self._check(f"get_artifact {ref}")
        version = registry_pb2.ModelVersion()
        version.CopyFrom(self.versions[ref])
        if ref in self.broken:
            version.artifact.signature = "00" * 32
        return registry_pb2.GetArtifactResponse(version=version, content=self.contents[ref])


def example(
    offset: int,
    model: str = MODEL,
    role: int = registry_pb2.ROUTE_ROLE_PRIMARY,
    partition: int = 0,
    example_id: str | None = None,
) -> ConsumedRecord:
    """The record of example ``offset`` (of :func:`row`) at that offset."""
    x, y = row(offset)
    message = events_pb2.LabeledExample(
        example_id=example_id or f"{model}-{partition}-{offset}",
        model=model,
        features=features_to_proto(x),
        label=target_to_proto(y),
        route_role=role,
    )
    return ConsumedRecord(TOPIC, partition, offset, model.encode(), encode_event(message))


async def feed_examples(
    pool: LearnerPool, offsets, rejects: Rejects | None = None, **kwargs
) -> list:
    """The outcome of each record, fed in order."""
    rejects = rejects if rejects is not None else Rejects()
    return [(await pool.process(example(o, **kwargs), rejects)).outcome for o in offsets]


async def save_all(pool: LearnerPool) -> dict[LearnerId, events_pb2.ModelUpdate]:
    """Publish (and acknowledge) every due update, as the loop does."""
    saved = {}
    for learner in pool.due_updates(force=True):
        update = await pool.build_update(learner)
        pool.saved(learner, update)
        saved[learner] = update
    return saved


async def reference(registry: RoutedRegistry, version: int, offsets) -> Any:
    """River in-process: the version's artifact, then learn_one on those examples in order."""
    signature = registry.versions[version].artifact.signature
    model = CODEC.decode(registry.contents[version], signature)
    for offset in offsets:
        model.learn_one(*row(offset))
    return model
