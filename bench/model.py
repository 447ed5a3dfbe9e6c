"""The benchmarked model: StandardScaler | LogisticRegression on 6 float features.

Rows come from a fixed linear rule, so the model learns something real and the
trainer and River see the same examples.
"""

from __future__ import annotations

import random
from typing import Any

from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.oip_datatypes import typed_contents
from headwater.shared.pb import oip_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.specs import build_model

N_FEATURES = 6
FEATURES = [f"x{i}" for i in range(N_FEATURES)]
WEIGHTS = [1.5, -2.0, 0.7, 0.0, 1.1, -0.4]
SPEC = (
    '{"pipeline": [{"component": "preprocessing.StandardScaler"}, '
    '{"component": "linear_model.LogisticRegression"}]}'
)
SEED = 7


def rows(count: int, seed: int = SEED) -> list[tuple[dict[str, float], bool]]:
    """``count`` labelled rows: Gaussian features, label = sign of a linear rule plus noise.

    >>> len(rows(3)), sorted(rows(1)[0][0]) == FEATURES
    (3, True)
    """
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        x = {name: rng.gauss(0.0, 1.0) for name in FEATURES}
        score = sum(w * x[name] for w, name in zip(WEIGHTS, FEATURES, strict=True))
        out.append((x, score + rng.gauss(0.0, 0.3) > 0.0))
    return out


def trained(count: int = 500) -> Any:
    """The pipeline built from SPEC (seeded) after learning ``count`` rows."""
    model = build_model(SPEC, seed=SEED)
    for x, y in rows(count, seed=SEED + 1):
        model.learn_one(x, y)
    return model


async def register(
    client: RegistryClient, codec: ArtifactCodec, model_name: str, estimator: Any = None
) -> int:
    """Create the binary model, register ``estimator`` (trained when None) and deploy it live."""
    await client.create_model(model_name, "binary", [(name, "float") for name in FEATURES])
    artifact = codec.encode(estimator if estimator is not None else trained())
    version = await client.create_version(
        model_name, SPEC, artifact=artifact.content, artifact_signature=artifact.signature
    )
    await client.deploy(model_name, version.version)
    return int(version.version)


def dense_request(model_name: str, row: dict[str, float]) -> oip_pb2.ModelInferRequest:
    """A batch-1 request with one dense FP64 ``[1, n_features]`` tensor, columns in schema order."""
    request = oip_pb2.ModelInferRequest(model_name=model_name)
    tensor = request.inputs.add(name="input__0", datatype="FP64", shape=[1, N_FEATURES])
    typed_contents(tensor.contents, "FP64").extend(row[name] for name in FEATURES)
    return request
