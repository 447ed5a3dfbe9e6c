"""``headwater gates set|show`` and ``headwater versions evaluations``: promotion gate clients.

The registry checks a model's gates when a rollout of a version starts
(``deploy --strategy …``) and when it is promoted (``rollout promote``); a
refusal names the failed gate and by how much.
"""

from __future__ import annotations

from typing import Any

import typer

from headwater.cli.output import Output, OutputOption, print_json, print_mapping, print_table
from headwater.cli.registry_commands import RegistryOption, registry_call
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient
from headwater.shared.registry_gates_client import promotion_gates

gates = typer.Typer(
    help="Set and show a model's promotion gates (checked when a rollout starts and when it "
    "is promoted).",
    no_args_is_help=True,
)
_OFF = "not enforced"


def parse_min_score(text: str) -> tuple[str, float]:
    """A min score such as ``accuracy=0.85``: the metric and its threshold.

    >>> parse_min_score("rolling_accuracy=0.9"), parse_min_score(" mae = 0.25 ")
    (('rolling_accuracy', 0.9), ('mae', 0.25))
    """
    metric, sep, threshold = text.partition("=")
    try:
        if sep:
            return metric.strip(), float(threshold)
    except ValueError:
        pass
    raise typer.BadParameter(f"{text!r} is not METRIC=THRESHOLD like accuracy=0.85")


def _gates_fields(found: registry_pb2.PromotionGates) -> dict[str, Any]:
    score, latency = found.min_score, found.max_warmup_latency_ms
    has_latency = found.HasField("max_warmup_latency_ms")
    return {
        "model": found.model,
        "schema_compatible": "enforced" if found.require_schema_compatible else _OFF,
        "min_score": f"{score.metric}={score.threshold:g}" if found.HasField("min_score") else _OFF,
        "min_examples": found.min_examples or _OFF,
        "max_warmup_latency_ms": f"{latency:g}" if has_latency else _OFF,
        "revision": found.revision or "never set (the defaults)",
        "updated by": found.updated_by or "-",
        "updated at": (
            found.updated_at.ToDatetime().isoformat(timespec="seconds") if found.revision else "-"
        ),
    }


def _show_gates(found: registry_pb2.PromotionGates, output: Output) -> None:
    if output is Output.json:
        print_json(found)
    else:
        print_mapping(f"promotion gates of {found.model}", _gates_fields(found))


@gates.command("set")
@registry_call
async def gates_set(
    model: str,
    min_score: str = typer.Option(
        "", help="METRIC=THRESHOLD: accuracy or rolling_accuracy at least it (classifiers), "
        "mae or rolling_mae at most it (regressors). Unset: no score gate."),
    min_examples: int = typer.Option(
        0, help="Least examples behind the version's score (0: no gate)."),
    max_warmup_latency_ms: float | None = typer.Option(
        None, help="Most warm-up latency any gateway replica may report (unset: no gate)."),
    schema_check: bool = typer.Option(
        True, "--schema-check/--no-schema-check",
        help="Whether the version must consume only declared features and predict what the "
        "deployed version predicts."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
) -> None:
    """Replace a model's promotion gates: a gate left out is no longer enforced."""
    wanted = promotion_gates(
        min_score=parse_min_score(min_score) if min_score else None,
        min_examples=min_examples, require_schema_compatible=schema_check,
        max_warmup_latency_ms=max_warmup_latency_ms,
    )  # fmt: skip
    async with RegistryClient(registry, actor="cli") as client:
        stored = await client.set_promotion_gates(model, wanted)
    _show_gates(stored, output)


@gates.command("show")
@registry_call
async def gates_show(
    model: str, output: Output = OutputOption, registry: str = RegistryOption
) -> None:
    """A model's promotion gates (the defaults until set: the schema check alone)."""
    async with RegistryClient(registry) as client:
        found = await client.get_promotion_gates(model)
    _show_gates(found, output)


@registry_call
async def versions_evaluations(
    model: str, version: int, output: Output = OutputOption, registry: str = RegistryOption
) -> None:
    """A version's latest evaluations (per metric and source) that its gates are judged on."""
    async with RegistryClient(registry) as client:
        found = await client.list_evaluations(model, version)
    if output is Output.json:
        print_json(found)
        return
    rows = [(
        e.metric, e.source, f"{e.value:.6g}", e.examples,
        e.at.ToDatetime().isoformat(timespec="seconds"),
        e.recorded_at.ToDatetime().isoformat(timespec="seconds"),
    ) for e in found]  # fmt: skip
    columns = ("metric", "source", "value", "examples", "measured at", "recorded at")
    print_table(f"evaluations of {model} v{version}", columns, rows)
