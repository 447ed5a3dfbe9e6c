"""``headwater models|versions|alias|predict|feedback|checkpoint``: clients of the services."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from google.protobuf.message import Message

from headwater.cli.clients import (
    FeedbackSender,
    InferenceClient,
    parse_value,
    request_checkpoint,
)
from headwater.cli.output import (
    Output,
    OutputOption,
    console,
    errors,
    print_json,
    print_mapping,
    print_table,
)
from headwater.shared import enums
from headwater.shared.errors import HeadwaterError
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, feature, lineage
from headwater.shared.settings import KafkaSettings, RegistryClientSettings, env_variable

# The services' own registry setting, so one variable points the CLI and them alike.
_REGISTRY_TARGET_ENV = env_variable(RegistryClientSettings, "target")
RegistryOption = typer.Option(
    RegistryClientSettings.model_fields["target"].default, "--registry",
    envvar=_REGISTRY_TARGET_ENV, help=f"Registry host:port [env {_REGISTRY_TARGET_ENV}].",
)
GatewayOption = typer.Option(
    "127.0.0.1:8001", "--gateway", envvar="HEADWATER_GATEWAY_TARGET",
    help="Gateway host:port [env HEADWATER_GATEWAY_TARGET].",
)

models = typer.Typer(help="Create, list and show models.", no_args_is_help=True)
versions = typer.Typer(help="Create, list and show model versions.", no_args_is_help=True)
alias = typer.Typer(help="Point aliases (champion, challenger, …) at versions.",
                    no_args_is_help=True)

P = ParamSpec("P")
R = TypeVar("R")


def _run(coroutine: Awaitable[R]) -> R:
    """Run one client call; headwater errors become a red line and exit code 1."""
    try:
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    except HeadwaterError as error:
        errors.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None


def registry_call(function: Callable[P, Awaitable[R]]) -> Callable[P, R]:
    """Make an async command function a plain one (typer calls it synchronously)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        return _run(function(*args, **kwargs))

    return wrapper


def _show(message: Message, output: Output, title: str, fields: dict[str, Any]) -> None:
    if output is Output.json:
        print_json(message)
    else:
        print_mapping(title, fields)


def _model_fields(model: registry_pb2.Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "task": enums.TASKS.get(model.task, "?"),
        "features": ", ".join(
            f"{f.name}:{enums.FEATURE_TYPES.get(f.type, '?')}"
            + ("" if f.required else "?") for f in model.features),
        "latest version": model.latest_version,
        "aliases": ", ".join(f"{k}→{v}" for k, v in sorted(model.aliases.items())),
        "description": model.description,
        "tags": ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items())),
    }


def _version_fields(version: registry_pb2.ModelVersion) -> dict[str, Any]:
    lin = version.lineage
    return {
        "model": version.model,
        "version": version.version,
        "source": enums.SOURCES.get(lin.source, "?"),
        "parent": lin.parent_version or "-",
        "examples": lin.example_count,
        "offsets": ", ".join(f"{o.topic}[{o.partition}] {o.first_offset}..{o.last_offset}"
                             for o in lin.offsets) or "-",
        "metrics": ", ".join(f"{k}={v:.4f}" for k, v in sorted(lin.metrics.items())) or "-",
        "seed": lin.seed,
        "sha256": version.artifact.sha256,
        "spec": version.spec_json,
    }


def _parse_feature(text: str) -> registry_pb2.Feature:
    name, _, rest = text.partition(":")
    kind, _, optional = rest.partition(":")
    return feature(name, kind or "float", required=optional != "optional")


def _parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{what} {pair!r} is not key=value")
        parsed[key] = value
    return parsed


@models.command("create")
@registry_call
async def models_create(
    name: str,
    task: str = typer.Option(..., help="binary, multiclass or regression."),
    features: list[str] = typer.Option(
        ..., "--feature", "-f", help="name:type[:optional], type float|int|str|bool; repeat."),
    description: str = typer.Option("", help="What the model predicts."),
    tags: list[str] = typer.Option([], "--tag", help="key=value; repeat."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
) -> None:
    """Register a model and its feature schema."""
    async with RegistryClient(registry, actor="cli") as client:
        model = await client.create_model(
            name, task, [_parse_feature(f) for f in features], description,
            _parse_pairs(tags, "tag"))
    _show(model, output, "model created", _model_fields(model))


@models.command("list")
@registry_call
async def models_list(output: Output = OutputOption, registry: str = RegistryOption) -> None:
    """Every model."""
    async with RegistryClient(registry) as client:
        found = await client.list_models()
    if output is Output.json:
        print_json(found)
        return
    rows = [(m.name, _model_fields(m)["task"], m.latest_version, len(m.features),
             _model_fields(m)["aliases"]) for m in found]
    print_table("models", ("name", "task", "latest", "features", "aliases"), rows)


@models.command("show")
@registry_call
async def models_show(
    name: str, output: Output = OutputOption, registry: str = RegistryOption
) -> None:
    """One model: schema, aliases, latest version."""
    async with RegistryClient(registry) as client:
        model = await client.get_model(name)
    _show(model, output, f"model {name}", _model_fields(model))


def _read_spec(spec: str) -> str:
    return Path(spec[1:]).read_text() if spec.startswith("@") else spec


@versions.command("create")
@registry_call
async def versions_create(
    model: str,
    spec: str = typer.Option(..., help="River pipeline spec as JSON, or @path/to/spec.json."),
    seed: int = typer.Option(0, help="Seed of the build; 0 lets the registry pick one."),
    parent: int = typer.Option(0, help="Parent version, 0 for none."),
    description: str = typer.Option("", help="What changed."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
) -> None:
    """Register a version built by the registry from a declarative spec."""
    async with RegistryClient(registry, actor="cli") as client:
        version = await client.create_version(
            model, _read_spec(spec), lineage(parent_version=parent, seed=seed),
            description=description)
    _show(version, output, "version created", _version_fields(version))


@versions.command("list")
@registry_call
async def versions_list(
    model: str, output: Output = OutputOption, registry: str = RegistryOption
) -> None:
    """Every version of a model with its lineage."""
    async with RegistryClient(registry) as client:
        found = await client.list_versions(model)
    if output is Output.json:
        print_json(found)
        return
    columns = ("version", "source", "parent", "examples", "metrics", "sha256")
    rows = [[_version_fields(v)[c] for c in columns] for v in found]
    for row in rows:
        row[-1] = str(row[-1])[:12]
    print_table(f"versions of {model}", columns, rows)


@versions.command("show")
@registry_call
async def versions_show(
    model: str,
    ref: str = typer.Argument(..., help="Version number or alias."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
) -> None:
    """One version: spec, artifact digest and lineage."""
    async with RegistryClient(registry) as client:
        version = await client.get_version(model, int(ref) if ref.isdigit() else ref)
    _show(version, output, f"{model} v{version.version}", _version_fields(version))


@alias.command("set")
@registry_call
async def alias_set(
    model: str, name: str, version: int, registry: str = RegistryOption
) -> None:
    """Point an alias at a version."""
    async with RegistryClient(registry, actor="cli") as client:
        await client.set_alias(model, name, version)
    console.print(f"{model}@{name} → v{version}")


@alias.command("delete")
@registry_call
async def alias_delete(model: str, name: str, registry: str = RegistryOption) -> None:
    """Delete an alias."""
    async with RegistryClient(registry, actor="cli") as client:
        await client.delete_alias(model, name)
    console.print(f"{model}@{name} deleted")


@registry_call
async def predict(
    model: str,
    features: list[str] = typer.Argument(..., help="key=value for each feature."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
    gateway: str = GatewayOption,
) -> None:
    """Predict one row through the gateway; prints outputs, version and prediction id."""
    row = {k: parse_value(v) for k, v in _parse_pairs(features, "feature").items()}
    async with RegistryClient(registry) as client:
        schema = await client.get_model(model)
    async with InferenceClient(gateway) as inference:
        (result,) = await inference.infer(schema, [row])
    fields = {"prediction": result.label, "proba": json.dumps(dict(result.proba)),
              "version": result.version, "prediction id": result.prediction_id,
              "live sequence": result.live_sequence}
    if output is Output.json:
        print_json(fields)
    else:
        print_mapping(f"{model} prediction", fields)


@registry_call
async def feedback(
    prediction_id: str,
    label: str = typer.Argument(..., help="true/false, an integer, a number or text."),
) -> None:
    """Send the ground truth of a prediction to the feedback topic."""
    async with FeedbackSender(KafkaSettings()) as sender:
        await sender.send(prediction_id, parse_value(label))
    console.print(f"feedback sent for {prediction_id}")


TrainerOption = typer.Option(
    "http://127.0.0.1:9102", "--trainer", envvar="HEADWATER_TRAINER_URL",
    help="Trainer HTTP address [env HEADWATER_TRAINER_URL].",
)


@registry_call
async def checkpoint(
    model: str,
    version: int | None = typer.Option(
        None, "--version", min=1,
        help="The deployed version whose learner to checkpoint (default: the primary's)."),
    output: Output = OutputOption,
    trainer: str = TrainerOption,
) -> None:
    """Ask the trainer to register a checkpoint version of a model's live learner now.

    Every deployed version (primary, canary, shadow, challenger) has its own learner.
    """
    created = await request_checkpoint(trainer, model, version)
    if output is Output.json:
        print_json(created)
        return
    print_mapping(f"checkpoint of {model}", {
        "version": created["version"], "parent": created["parent_version"],
        "examples": created["example_count"],
        "offsets": ", ".join(f"{o['topic']}[{o['partition']}] {o['first']}..{o['last']}"
                             for o in created["offsets"]) or "-"})
