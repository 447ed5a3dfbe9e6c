from __future__ import annotations

import collections
import json
import os
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import SecretStr
from river import linear_model, preprocessing

from headwater.shared.artifacts import (
    FORMAT,
    ArtifactCodec,
    SignedArtifact,
    content_sha256,
    restricted_loads,
)
from headwater.shared.errors import ArtifactIntegrityError, ResourceExhausted
from headwater.shared.settings import ArtifactSettings
from headwater.shared.specs import ALLOWED_COMPONENTS, build_model, parse_spec

KEY = "test-signing-key"


@pytest.fixture
def codec() -> ArtifactCodec:
    return ArtifactCodec(KEY)


@pytest.fixture
def trained() -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i in range(50):
        model.learn_one({"a": i % 7, "b": (i * 3) % 5}, i % 7 > 3)
    return model


def test_encode_produces_a_signed_content_addressed_artifact(
    codec: ArtifactCodec, trained: Any
) -> None:
    artifact = codec.encode(trained)
    assert isinstance(artifact, SignedArtifact)
    assert artifact.format == FORMAT == "river-pickle/v1"
    assert artifact.sha256 == content_sha256(artifact.content)
    assert len(artifact.signature) == 64 and int(artifact.signature, 16) >= 0
    assert artifact.signature == codec.sign(artifact.content)
    assert artifact.size_bytes == len(artifact.content) > 0
    assert pickle.loads(artifact.content).predict_one({"a": 5, "b": 1}) == trained.predict_one(
        {"a": 5, "b": 1}
    )


def test_round_trip_keeps_predictions(codec: ArtifactCodec, trained: Any) -> None:
    artifact = codec.encode(trained)
    loaded = codec.decode(artifact.content, artifact.signature, artifact.sha256)
    assert loaded is not trained
    for a in range(7):
        x = {"a": a, "b": 2}
        assert loaded.predict_proba_one(x) == trained.predict_proba_one(x)
    assert codec.load(artifact).predict_one({"a": 6, "b": 0}) == trained.predict_one(
        {"a": 6, "b": 0}
    )


def test_verify_accepts_good_artifacts_without_a_digest(codec: ArtifactCodec, trained: Any) -> None:
    artifact = codec.encode(trained)
    codec.verify(artifact.content, artifact.signature)
    codec.verify(artifact.content, artifact.signature.upper(), artifact.sha256.upper())


@pytest.mark.parametrize("position", [0, 10, -1])
def test_a_flipped_byte_is_refused(codec: ArtifactCodec, trained: Any, position: int) -> None:
    artifact = codec.encode(trained)
    tampered = bytearray(artifact.content)
    tampered[position] ^= 0x01
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        codec.decode(bytes(tampered), artifact.signature, artifact.sha256)
    with pytest.raises(ArtifactIntegrityError, match="signature does not verify"):
        codec.decode(bytes(tampered), artifact.signature)


def test_a_tampered_signature_is_refused(codec: ArtifactCodec, trained: Any) -> None:
    artifact = codec.encode(trained)
    flipped = ("0" if artifact.signature[0] != "0" else "1") + artifact.signature[1:]
    for signature in (flipped, "", "not hex", artifact.signature[:-1], "é" * 64):
        with pytest.raises(ArtifactIntegrityError, match="signature does not verify"):
            codec.verify(artifact.content, signature, artifact.sha256)


def test_wrong_key_is_refused(trained: Any) -> None:
    artifact = ArtifactCodec("key-one").encode(trained)
    with pytest.raises(ArtifactIntegrityError, match="wrong signing key"):
        ArtifactCodec("key-two").decode(artifact.content, artifact.signature, artifact.sha256)


def test_oversized_artifacts_are_refused(trained: Any) -> None:
    small = ArtifactCodec(KEY, max_bytes=100)
    content = ArtifactCodec(KEY).encode(trained).content
    assert len(content) > 100
    with pytest.raises(ArtifactIntegrityError, match="over the limit of 100"):
        small.verify(content, small.sign(content))
    with pytest.raises(ResourceExhausted, match="over the limit of 100"):
        small.encode(trained)


def test_wrong_format_is_refused(codec: ArtifactCodec, trained: Any) -> None:
    artifact = codec.encode(trained)
    other = SignedArtifact(artifact.content, artifact.sha256, artifact.signature, "onnx/v1")
    with pytest.raises(ArtifactIntegrityError, match="format 'onnx/v1'"):
        codec.load(other)


class _System:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


class _Eval:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("1 + 1",))


class _Escape:
    """getattr walking from an allowed River function to its module globals."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (getattr, (linear_model.LogisticRegression.learn_one, "__globals__"))


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (_System(), "refused global: "),
        (_Eval(), "refused global: builtins.eval"),
        (_Escape(), "getattr"),
        (collections.UserDict(), "refused global: collections.UserDict"),
    ],
)
def test_signed_pickles_of_other_globals_are_refused(
    codec: ArtifactCodec, payload: object, refused: str
) -> None:
    content = pickle.dumps(payload, protocol=5)
    with pytest.raises(ArtifactIntegrityError, match=refused):
        codec.decode(content, codec.sign(content))


def test_os_system_is_named_when_refused(codec: ArtifactCodec) -> None:
    content = pickle.dumps(_System(), protocol=5)
    with pytest.raises(ArtifactIntegrityError) as info:
        codec.decode(content, codec.sign(content))
    assert "system" in str(info.value)  # posix.system or os.system


def global_pickle(module: str, name: str) -> bytes:
    """A hand-made pickle that only loads the global ``module.name``."""
    out = b"\x80\x04"
    for text in (module.encode(), name.encode()):
        out += b"\x8c" + bytes([len(text)]) + text
    return out + b"\x93."


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("river.linear_model.log_reg", "LogisticRegression.__init__.__globals__"),
        ("river.linear_model.log_reg", "optim"),  # a module reached through River
        ("river.linear_model.log_reg", "optim.base.abc.ABCMeta"),
        ("river.datasets", "Phishing"),
        ("river.stream", "iter_csv"),
        ("builtins", "eval"),
        ("builtins", "__import__"),
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("numpy", "load"),
        ("copyreg", "_reconstructor"),
    ],
)
def test_refused_globals(module: str, name: str) -> None:
    with pytest.raises(ArtifactIntegrityError, match="refused global"):
        restricted_loads(global_pickle(module, name))


def test_allowed_globals_alone_are_not_models() -> None:
    with pytest.raises(ArtifactIntegrityError, match="not a River estimator"):
        restricted_loads(global_pickle("river.linear_model.log_reg", "LogisticRegression"))


def test_river_modules_outside_the_model_packages_are_refused(codec: ArtifactCodec) -> None:
    content = pickle.dumps(parse_spec, protocol=5)  # a headwater function
    with pytest.raises(ArtifactIntegrityError, match=r"refused global: headwater\.shared\.specs"):
        restricted_loads(content)
    import river.datasets

    content = pickle.dumps(river.datasets.Phishing, protocol=5)
    with pytest.raises(ArtifactIntegrityError, match=r"river\.datasets"):
        restricted_loads(content)


def test_only_river_estimators_are_loaded(codec: ArtifactCodec) -> None:
    content = pickle.dumps({"not": "a model"}, protocol=5)
    with pytest.raises(ArtifactIntegrityError, match="not a River estimator"):
        codec.decode(content, codec.sign(content))
    with pytest.raises(ArtifactIntegrityError, match="could not be unpickled"):
        codec.decode(b"garbage", codec.sign(b"garbage"))
    with pytest.raises(TypeError):
        codec.encode({"not": "a model"})


def test_from_settings_uses_the_key_and_limit(trained: Any) -> None:
    settings = ArtifactSettings(signing_key=SecretStr("from-settings"), max_bytes=1 << 20)
    codec = ArtifactCodec.from_settings(settings)
    assert codec.max_bytes == 1 << 20
    assert codec.sign(b"x") == ArtifactCodec("from-settings").sign(b"x")
    assert "from-settings" not in repr(codec)
    with pytest.raises(ValueError):
        ArtifactCodec("")


@pytest.mark.parametrize("name", list(ALLOWED_COMPONENTS))
def test_every_allowed_component_round_trips(
    name: str,
    codec: ArtifactCodec,
    component_spec: Callable[[str], dict[str, Any]],
    synthetic_stream: Callable[..., list[tuple[dict[str, Any], Any]]],
) -> None:
    spec = parse_spec(json.dumps(component_spec(name)))
    model = build_model(spec, seed=11)
    data = synthetic_stream(120, regression=spec.kind == "regressor")
    for x, y in data[:100]:
        model.learn_one(x, y)
    artifact = codec.encode(model)
    loaded = codec.decode(artifact.content, artifact.signature, artifact.sha256)
    for x, y in data[100:]:  # same answers, and the same state to keep learning from
        assert loaded.predict_one(x) == model.predict_one(x)
        model.learn_one(x, y)
        loaded.learn_one(x, y)
    assert loaded.predict_one(data[0][0]) == model.predict_one(data[0][0])


def test_headwater_components_pickle_under_the_package_path(codec: ArtifactCodec) -> None:
    # Artifacts stored before shared/specs.py became a package name this module path.
    import pickletools

    from headwater.shared.specs import HEADWATER_COMPONENTS

    spec = (
        '{"pipeline": [{"component": "compose.Select", "params": {"keys": ["a"]}}, '
        '{"component": "preprocessing.StatImputer"}, '
        '{"component": "linear_model.LinearRegression"}]}'
    )
    artifact = codec.encode(build_model(spec))
    modules = {
        arg for op, arg, _ in pickletools.genops(artifact.content) if op.name == "SHORT_BINUNICODE"
    }
    assert "headwater.shared.specs" in modules
    assert not any(str(m).startswith("headwater.shared.specs.") for m in modules)
    loaded = codec.load(artifact)
    assert {type(step) for step in loaded.steps.values()} >= set(HEADWATER_COMPONENTS)
