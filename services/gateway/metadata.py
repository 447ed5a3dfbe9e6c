"""OIP model metadata of a deployed model (pure, no I/O).

>>> from headwater.shared.pb import registry_pb2 as R
>>> from headwater.services.gateway.model_cache import ModelEntry, ServedVersion
>>> model = R.Model(name="m", task=R.TASK_BINARY, features=[
...     R.Feature(name="x", type=R.FEATURE_TYPE_FLOAT, required=True),
...     R.Feature(name="city", type=R.FEATURE_TYPE_STR)])
>>> deployment = R.Deployment(model="m", routes=[R.Route(version=3, weight=1.0, role=1)])
>>> entry = ModelEntry.build(model, deployment, {3: ServedVersion(3, None)})
>>> metadata = model_metadata(entry)
>>> metadata.versions, metadata.platform
(['3'], 'river')
>>> [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
[('x', 'FP64', [-1]), ('city', 'BYTES', [-1])]
>>> [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs]
[('predict', 'BOOL', [-1]), ('predict_proba', 'FP64', [-1, -1])]
"""

from __future__ import annotations

from headwater.services.gateway.model_cache import ModelEntry
from headwater.services.gateway.outputs import PREDICT, PREDICT_PROBA
from headwater.shared.oip_datatypes import preferred_datatype
from headwater.shared.pb import oip_pb2

PLATFORM = "river"
Tensor = oip_pb2.ModelMetadataResponse.TensorMetadata


def model_metadata(entry: ModelEntry) -> oip_pb2.ModelMetadataResponse:
    """Inputs (one tensor per feature, schema order), outputs and deployed versions.

    The ``predict`` datatype is the one every answer of this model uses: BOOL
    (binary), BYTES (multiclass) or FP64 (regression), whatever the batch.
    """
    inputs = [
        Tensor(name=f.name, datatype=preferred_datatype(f.type), shape=[-1])
        for f in entry.schema.features
    ]
    outputs = [Tensor(name=PREDICT, datatype=entry.predict_datatype, shape=[-1])]
    if entry.classifier:
        outputs.append(Tensor(name=PREDICT_PROBA, datatype="FP64", shape=[-1, -1]))
    return oip_pb2.ModelMetadataResponse(
        name=entry.name,
        versions=[str(v) for v in entry.routes.versions],
        platform=PLATFORM,
        inputs=inputs,
        outputs=outputs,
    )
