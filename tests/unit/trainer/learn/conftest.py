"""The learner pool's test doubles: an in-memory registry, example records, a wired pool."""

from __future__ import annotations

from headwater.services.trainer.learn.pool import ExampleOutcome, LearnerPool
from headwater.services.trainer.learn.updates import UpdateIndex
from headwater.services.trainer.settings import TrainerSettings
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import encode_event
from headwater.shared.bus.records import ConsumedRecord
from headwater.shared.errors import ModelNotFound, Unavailable
from headwater.shared.features import features_to_proto, target_to_proto
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import lineage as make_lineage
from headwater.shared.registry_client import route
from headwater.shared.settings import KafkaSettings
from headwater.shared.specs import build_model
from tests.fakes import FakeProducer

SPEC = '{"component": "linear_model.LogisticRegression"}'
CODEC = ArtifactCodec("unit-key")
TOPIC = "hw.examples"


class FakeRegistry:
    """Versions, deployments and models in memory, with the client's method names."""

    def __init__(self) -> None:
        self.versions: dict[int, registry_pb2.ModelVersion] = {}
        self.contents: dict[int, bytes] = {}
        self.deployed: int | None = None
        self.calls: list[str] = []
        self.down = False
        self.created_artifacts: list[bytes] = []
        self.lose_answers = 0  # create_version commits, then raises Unavailable (a timeout)
        self.down_after_create = False  # ... and the registry stays unreachable after it
        self.add_version(build_model(SPEC, seed=1))

    def add_version(self, estimator, lineage=None, tags=None) -> int:
        number = len(self.versions) + 1
        artifact = CODEC.encode(estimator)
        self.versions[number] = registry_pb2.ModelVersion(
            model="m",
            version=number,
            spec_json=SPEC,
            lineage=lineage or make_lineage(seed=1),
            artifact=registry_pb2.Artifact(sha256=artifact.sha256, signature=artifact.signature),
            tags=dict(tags or {}),
        )
        self.contents[number] = artifact.content
        return number

    def _check(self, call: str) -> None:
        self.calls.append(call)
        if self.down:
            raise Unavailable("registry down")

    async def get_deployment(self, model: str) -> registry_pb2.Deployment:
        self._check("get_deployment")
        if self.deployed is None:
            raise ModelNotFound(f"model {model!r} has no deployment")
        return registry_pb2.Deployment(model=model, routes=[route(self.deployed)])

    async def get_model(self, model: str) -> registry_pb2.Model:
        self._check("get_model")
        features = [registry_pb2.Feature(name="x", type=registry_pb2.FEATURE_TYPE_FLOAT)]
        return registry_pb2.Model(name=model, task=registry_pb2.TASK_BINARY, features=features)

    async def get_artifact(self, model: str, ref: int) -> registry_pb2.GetArtifactResponse:
        self._check("get_artifact")
        return registry_pb2.GetArtifactResponse(
            version=self.versions[ref], content=self.contents[ref]
        )

    async def create_version(self, model, spec_json, lineage=None, **kwargs):
        self._check("create_version")
        estimator = CODEC.decode(kwargs["artifact"], kwargs["artifact_signature"])
        self.created_artifacts.append(kwargs["artifact"])
        number = self.add_version(estimator, lineage, kwargs.get("tags"))
        if self.lose_answers:
            self.lose_answers -= 1
            self.down = self.down_after_create
            raise Unavailable("deadline exceeded")
        return self.versions[number]

    async def list_versions(self, model: str) -> list[registry_pb2.ModelVersion]:
        self._check("list_versions")
        return list(self.versions.values())


def record(offset: int, example_id: str | None = None, x: float | str = 1.0) -> ConsumedRecord:
    example = events_pb2.LabeledExample(example_id=example_id or f"e{offset}", model="m")
    if isinstance(x, str):
        example.features["x"].string_value = x
    else:
        example.features["x"].CopyFrom(features_to_proto({"x": x * (offset % 3 - 1)})["x"])
    example.label.CopyFrom(target_to_proto(offset % 3 == 2))
    return ConsumedRecord(TOPIC, 0, offset, b"m", encode_event(example))


class Rejects(list):
    async def __call__(self, record: ConsumedRecord, reason: str) -> None:
        self.append((record.offset, reason))


def new_index(codec: ArtifactCodec = CODEC) -> UpdateIndex:
    return UpdateIndex(KafkaSettings(bootstrap="127.0.0.1:1"), "test", codec, FakeProducer())  # type: ignore[arg-type]


def make_pool(registry: FakeRegistry, index: UpdateIndex | None = None, **settings) -> LearnerPool:
    values = {"checkpoint_every_examples": 1000, "sync_interval_ms": 250, **settings}
    return LearnerPool(
        TrainerSettings(kafka=KafkaSettings(bootstrap="127.0.0.1:1"), **values),
        registry,  # type: ignore[arg-type]
        CODEC,
        index or new_index(),
        clock=lambda: 0.0,
    )


async def save(pool: LearnerPool) -> events_pb2.ModelUpdate:
    [model] = pool.due_updates(force=True)
    update = await pool.build_update(model)
    pool.saved(model, update)
    return update


async def feed(pool: LearnerPool, offsets, rejects=None) -> list[ExampleOutcome]:
    rejects = rejects if rejects is not None else Rejects()
    return [(await pool.process(record(o), rejects)).outcome for o in offsets]
