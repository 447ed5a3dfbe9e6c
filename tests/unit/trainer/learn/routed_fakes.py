"""An in-memory registry whose deployment has several routes, and the pool's test helpers."""

from __future__ import annotations

from typing import Any

from river import linear_model

from headwater.services.trainer.learn.pool import LearnerPool
from headwater.services.trainer.learn.routes import LearnerId
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import ModelNotFound
from headwater.shared.features import features_to_proto, target_to_proto
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import lineage as make_lineage
from headwater.shared.registry_client import route
from headwater.shared.settings import KafkaSettings
from tests.unit.shared.test_record_policy import FakeProducer

SPEC = '{"component": "linear_model.LogisticRegression"}'
CODEC = ArtifactCodec("unit-key")
TOPIC = "hw.examples"
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


class RoutedRegistry:
    """Versions, a deployment of several routes and the model, with the client's method names."""

    def __init__(self, versions: int = 3) -> None:
        self.versions: dict[int, registry_pb2.ModelVersion] = {}
        self.contents: dict[int, bytes] = {}
        self.deployment = registry_pb2.Deployment(model=MODEL)
        self.broken: set[int] = set()  # versions whose artifact does not verify
        self.calls: list[str] = []
        for k in range(versions):
            self.add_version(start_model(3 * k))

    def add_version(self, estimator: Any, lineage=None, tags=None) -> int:
        number = len(self.versions) + 1
        artifact = CODEC.encode(estimator)
        self.versions[number] = registry_pb2.ModelVersion(
            model=MODEL,
            version=number,
            spec_json=SPEC,
            lineage=lineage or make_lineage(seed=1),
            artifact=registry_pb2.Artifact(sha256=artifact.sha256, signature=artifact.signature),
            tags=dict(tags or {}),
        )
        self.contents[number] = artifact.content
        return number

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
        self.calls.append("get_deployment")
        if model != MODEL or not self.deployment.routes:
            raise ModelNotFound(f"model {model!r} has no deployment")
        return self.deployment

    async def get_model(self, model: str) -> registry_pb2.Model:
        self.calls.append("get_model")
        features = [registry_pb2.Feature(name="x", type=registry_pb2.FEATURE_TYPE_FLOAT)]
        return registry_pb2.Model(name=model, task=registry_pb2.TASK_BINARY, features=features)

    async def get_artifact(self, model: str, ref: int) -> registry_pb2.GetArtifactResponse:
        self.calls.append(f"get_artifact {ref}")
        version = registry_pb2.ModelVersion()
        version.CopyFrom(self.versions[ref])
        if ref in self.broken:
            version.artifact.signature = "00" * 32
        return registry_pb2.GetArtifactResponse(version=version, content=self.contents[ref])

    async def create_version(self, model, spec_json, lineage=None, **kwargs):
        self.calls.append("create_version")
        estimator = CODEC.decode(kwargs["artifact"], kwargs["artifact_signature"])
        return self.versions[self.add_version(estimator, lineage, kwargs.get("tags"))]

    async def list_versions(self, model: str) -> list[registry_pb2.ModelVersion]:
        self.calls.append("list_versions")
        return list(self.versions.values())


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


class Rejects(list):
    """The dead letters a pool hands out: (offset, reason)."""

    async def __call__(self, record: ConsumedRecord, reason: str) -> None:
        self.append((record.offset, reason))


def new_index() -> UpdateIndex:
    return UpdateIndex(KafkaSettings(bootstrap="127.0.0.1:1"), "test", CODEC, FakeProducer())  # type: ignore[arg-type]


def make_pool(
    registry: RoutedRegistry, index: UpdateIndex | None = None, **settings
) -> LearnerPool:
    values = {"checkpoint_every_examples": 1000, "sync_interval_ms": 250, **settings}
    return LearnerPool(
        TrainerSettings(kafka=KafkaSettings(bootstrap="127.0.0.1:1"), **values),
        registry,  # type: ignore[arg-type]
        CODEC,
        index or new_index(),
        clock=lambda: 0.0,
    )


async def feed(pool: LearnerPool, offsets, rejects: Rejects | None = None, **kwargs) -> list:
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
