"""The model cache: deployments installed by revision, what is ready, what a deployment keeps."""

from __future__ import annotations

import pytest
from river import linear_model

from headwater.services.gateway.model_cache import ModelCache, ModelEntry, ServedVersion
from headwater.services.gateway.tensors import parse_version
from headwater.shared.errors import InvalidInput, ModelNotFound, ModelNotReady
from headwater.shared.pb import registry_pb2

R = registry_pb2
X = {"x": 1.0}


def model_proto(name: str = "m") -> R.Model:
    return R.Model(
        name=name,
        task=R.TASK_BINARY,
        features=[R.Feature(name="x", type=R.FEATURE_TYPE_FLOAT, required=True)],
    )


def deployment(
    revision: int, *versions: int, mode: int = R.SERVING_MODE_LIVE, name: str = "m"
) -> R.Deployment:
    routes = [R.Route(version=v, weight=1.0, role=R.ROUTE_ROLE_PRIMARY) for v in versions[:1]]
    routes += [R.Route(version=v, weight=0.0, role=R.ROUTE_ROLE_SHADOW) for v in versions[1:]]
    return R.Deployment(model=name, routes=routes, mode=mode, revision=revision)


def entry(revision: int, *versions: int, mode: int = R.SERVING_MODE_LIVE) -> ModelEntry:
    loaded = {v: ServedVersion(v, linear_model.LogisticRegression()) for v in versions}
    return ModelEntry.build(model_proto(), deployment(revision, *versions, mode=mode), loaded)


def served(cache: ModelCache, version: int = 1) -> ServedVersion:
    return cache.get("m").versions[version]


def test_unknown_model_is_not_found_and_undeployed_is_not_ready() -> None:
    cache = ModelCache()
    with pytest.raises(ModelNotFound, match="model 'm' not found"):
        cache.get("m")
    cache.know("m")
    with pytest.raises(ModelNotReady, match="model 'm' is not deployed"):
        cache.get("m")


def test_install_keeps_the_newest_revision() -> None:
    cache = ModelCache()
    assert cache.install(entry(2, 2))
    assert not cache.install(entry(1, 1))
    assert list(cache.get("m").versions) == [2]
    assert cache.install(entry(3, 3))
    assert cache.revision("m") == 3
    assert not cache.remove("m", 2)
    assert cache.remove("m", 4)
    with pytest.raises(ModelNotReady):
        cache.get("m")


def test_routed_versions_must_be_loaded() -> None:
    with pytest.raises(ValueError, match=r"versions \[2\]"):
        ModelEntry.build(model_proto(), deployment(1, 1, 2), {1: ServedVersion(1, None)})


def test_model_ready_per_model_and_version() -> None:
    cache = ModelCache()
    with pytest.raises(ModelNotFound, match="model 'm' not found"):
        cache.ready("m")
    cache.know("m")
    assert cache.ready("m") is False  # known, not deployed
    cache.install(entry(1, 1, 2))  # 1 primary, 2 shadow
    assert cache.ready("m") is True
    assert (cache.ready("m", 1), cache.ready("m", 2), cache.ready("m", 3)) == (
        True,
        True,
        False,
    )
    with pytest.raises(InvalidInput, match="version must be a version number, got 'latest'"):
        parse_version("latest", "version")  # ModelReady parses the version it is asked about
    shadow_only = R.Deployment(
        model="m", revision=2, routes=[R.Route(version=2, weight=1.0, role=R.ROUTE_ROLE_SHADOW)]
    )
    cache.install(ModelEntry.build(model_proto(), shadow_only, {2: ServedVersion(2, None)}))
    assert cache.ready("m") is False  # nothing may answer
