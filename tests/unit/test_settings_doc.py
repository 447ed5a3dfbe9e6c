"""docs/settings.md is generated from the settings classes and must be current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from headwater.shared.settings import ArtifactSettings, KafkaSettings, env_variable

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_settings_doc",
                                                  ROOT / "tools" / "gen_settings_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_doc_is_current() -> None:
    expected = _generator().render()
    assert (ROOT / "docs" / "settings.md").read_text() == expected, "run make docs"


def test_every_field_is_documented() -> None:
    generator = _generator()
    for _, module, name in generator.SETTINGS:
        cls = generator._load(module, name)
        assert cls is not None, f"{module}.{name} is missing"
        undocumented = [f for f, info in cls.model_fields.items() if not info.description
                        and f not in ("kafka", "telemetry", "artifacts", "database")]
        assert undocumented == [], f"{name}: {undocumented}"


def test_no_two_settings_classes_read_one_variable() -> None:
    # The registry client's HEADWATER_REGISTRY_TARGET shares the registry server's prefix.
    generator = _generator()
    readers: dict[str, str] = {}
    for _, module, name in generator.SETTINGS:
        cls = generator._load(module, name)
        for field in generator.own_fields(cls):
            variable = env_variable(cls, field)
            assert variable not in readers, f"{variable}: read by {readers[variable]} and {name}"
            readers[variable] = name
    assert readers["HEADWATER_REGISTRY_TARGET"] == "RegistryClientSettings"


def test_environment_overrides_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_KAFKA_BOOTSTRAP", "kafka.example:9093")
    monkeypatch.setenv("HEADWATER_KAFKA_TOPIC_PREFIX", "prod.")
    settings = KafkaSettings()
    assert settings.bootstrap == "kafka.example:9093"
    assert settings.topic("feedback") == "prod.feedback"


def test_signing_key_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWATER_ARTIFACT_SIGNING_KEY", "s3cret-key")
    settings = ArtifactSettings()
    assert "s3cret-key" not in repr(settings)
    assert settings.signing_key.get_secret_value() == "s3cret-key"
