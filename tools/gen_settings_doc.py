"""Generate docs/settings.md from the settings classes (``make docs``).

The classes are the source of truth; tests/unit/test_settings_doc.py fails when
the page is stale.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from headwater.shared.settings import env_variable

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "settings.md"
SETTINGS = (
    ("Kafka (every service)", "headwater.shared.settings", "KafkaSettings"),
    ("PostgreSQL (registry)", "headwater.shared.settings", "DatabaseSettings"),
    ("Telemetry (every service)", "headwater.shared.settings", "TelemetrySettings"),
    ("Artifacts (every service)", "headwater.shared.settings", "ArtifactSettings"),
    ("Registry client (gateway, trainer, monitor, CLI)", "headwater.shared.settings",
     "RegistryClientSettings"),
    ("Registry", "headwater.services.registry.settings", "RegistrySettings"),
    ("Gateway", "headwater.services.gateway.settings", "GatewaySettings"),
    ("Trainer", "headwater.services.trainer.settings", "TrainerSettings"),
    ("Monitor", "headwater.services.monitor.settings", "MonitorSettings"),
    ("Local stack (headwater up)", "headwater.cli.localstack.stack", "StackSettings"),
)


def _load(module: str, name: str) -> type[BaseSettings] | None:
    try:
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return None


def _default(field: object) -> str:
    default = getattr(field, "default", None)
    if getattr(field, "default_factory", None) is not None:
        return "(see its section)"
    if hasattr(default, "get_secret_value"):
        return "(secret)"
    return f"`{default!r}`" if default is not None else ""


def own_fields(cls: type[BaseSettings]) -> list[str]:
    """The scalar fields of a settings class (nested groups have their own section)."""
    return [name for name, field in cls.model_fields.items()
            if not (isinstance(field.annotation, type)
                    and issubclass(field.annotation, BaseSettings))]


def section(title: str, cls: type[BaseSettings]) -> list[str]:
    """The markdown of one settings class: a table of its own scalar fields."""
    lines = [f"## {title}", "", f"`{cls.__module__}.{cls.__name__}`", "",
             "| variable | default | meaning |", "| --- | --- | --- |"]
    for name in own_fields(cls):
        field = cls.model_fields[name]
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{env_variable(cls, name)}` | {_default(field)} | {description} |")
    return [*lines, ""]


def render() -> str:
    """The whole page."""
    lines = ["# Settings", "",
             "Generated from the settings classes by `make docs`; do not edit by hand.",
             "Every service reads only environment variables; nested groups (Kafka,",
             "PostgreSQL, telemetry, artifacts, registry client) have their own prefix",
             "and are shared.", ""]
    for title, module, name in SETTINGS:
        cls = _load(module, name)
        if cls is not None:
            lines += section(title, cls)
    return "\n".join(lines)


def main() -> int:
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
