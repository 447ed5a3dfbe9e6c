"""``headwater deploy`` and ``headwater rollout …``: clients of the registry's rollouts.

``deploy --strategy direct`` (the default) sets the deployment at once; every
other strategy starts a rollout the registry keeps and the monitor advances.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import typer

from headwater.cli.output import (
    Output,
    OutputOption,
    console,
    print_json,
    print_mapping,
    print_table,
    to_plain,
)
from headwater.cli.registry_commands import RegistryOption, registry_call
from headwater.shared import enums
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, rollout_policy

rollout = typer.Typer(
    help="Follow and steer a model's rollout (started by deploy --strategy).",
    no_args_is_help=True,
)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_SECONDS_PER = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
ReasonOption = typer.Option("", "--reason", help="Why, recorded in the rollout's history.")
RevisionOption = typer.Option(
    0, "--expect-revision", help="Refuse unless the rollout is at this revision (0: any)."
)


class Strategy(StrEnum):
    """How ``deploy`` moves traffic to the version."""

    direct = "direct"
    blue_green = "blue-green"
    canary = "canary"
    rolling = "rolling"
    shadow = "shadow"
    bandit = "bandit"


def parse_duration_s(text: str) -> float:
    """Seconds in a duration such as ``90``, ``60s``, ``5m``, ``1.5h`` or ``500ms``.

    >>> [parse_duration_s(t) for t in ("90", "60s", "5m", "1.5h", "500ms")]
    [90.0, 60.0, 300.0, 5400.0, 0.5]
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration like 60s, 5m or 1h")
    return float(match.group(1)) * _SECONDS_PER[match.group(2) or "s"]


def parse_percents(text: str) -> list[float]:
    """Step percents such as ``5,25,50,100``.

    >>> parse_percents("5, 25,50,100")
    [5.0, 25.0, 50.0, 100.0]
    """
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a list of percents like 5,25,50,100") from None


def _state(state: registry_pb2.RolloutState.ValueType, unset: str = "?") -> str:
    return enums.ROLLOUT_STATES.get(state, unset)


def _routes(deployment: registry_pb2.Deployment) -> str:
    return ", ".join(
        f"v{r.version} {enums.ROLES.get(r.role, '?')} {r.weight:.0%}" for r in deployment.routes
    )


def _rollout_fields(found: registry_pb2.Rollout) -> dict[str, Any]:
    policy = found.policy
    return {
        "model": found.model,
        "strategy": enums.STRATEGIES.get(found.strategy, "?"),
        "state": _state(found.state),
        "candidate": f"v{found.candidate_version}",
        "baseline": f"v{found.baseline_version}",
        "step": found.step,
        "revision": found.revision,
        "started by": found.actor,
        "started at": found.created_at.ToDatetime().isoformat(timespec="seconds"),
        "step started": found.step_started_at.ToDatetime().isoformat(timespec="seconds"),
        "policy": (
            f"steps {','.join(f'{p:g}' for p in policy.step_percents)}%, "
            f"every {policy.interval_s:g}s, min {policy.min_samples} per arm, "
            f"max drop {policy.max_drop:g}, alpha {policy.alpha:g}"
        ),
        "id": found.id,
    }


def _print_rollout(
    found: registry_pb2.Rollout,
    deployment: registry_pb2.Deployment,
    output: Output,
    replicas: Sequence[registry_pb2.Replica] | None = None,
) -> None:
    """The rollout and its routes; with ``replicas``, every live replica and what it serves."""
    if output is Output.json:
        shown: dict[str, Any] = {"rollout": to_plain(found), "deployment": to_plain(deployment)}
        if replicas is not None:
            shown["replicas"] = [to_plain(r) for r in replicas]
        print_json(shown)
        return
    fields = {**_rollout_fields(found), "routes": _routes(deployment)}
    if found.switched_replicas:
        fields["switched replicas"] = ", ".join(found.switched_replicas)
    print_mapping(f"rollout of {found.model}", fields)
    if replicas is not None:
        _print_replicas(found.model, deployment, replicas)


def _print_replicas(
    model: str, deployment: registry_pb2.Deployment, replicas: Sequence[registry_pb2.Replica]
) -> None:
    if not replicas:
        console.print("no live gateway replica")
        return
    rows = [(
        r.id, r.address, r.last_heartbeat_at.ToDatetime().isoformat(timespec="seconds"),
        ", ".join(_loaded(v) for v in r.versions) or "-", _answers_with(r, deployment),
    ) for r in replicas]  # fmt: skip
    columns = ("replica", "address", "last heartbeat", "loaded", "answers with")
    print_table(f"gateway replicas serving {model}", columns, rows)


def _loaded(version: registry_pb2.ReplicaVersion) -> str:
    state = "ready" if version.ready else "not ready"
    warmup = f", warm-up {version.warmup_latency_ms:.2g} ms" if version.warmup_latency_ms else ""
    return f"v{version.version} ({state}{warmup})"


def _answers_with(replica: registry_pb2.Replica, deployment: registry_pb2.Deployment) -> str:
    """What the replica answers with: its rolling assignment, else the deployment's routes."""
    if replica.assignments:  # the listing is the model's: one at most
        assignment = replica.assignments[0]
        told = "switched" if assignment.switched else "not switched yet"
        return f"v{assignment.version} ({told})"
    if not any(v.ready for v in replica.versions):
        return "nothing yet (loading)"
    answering = (registry_pb2.ROUTE_ROLE_PRIMARY, registry_pb2.ROUTE_ROLE_CANARY)
    return ", ".join(
        f"v{r.version} {r.weight:.0%}" for r in deployment.routes if r.role in answering
    )


@registry_call
async def deploy(
    model: str,
    version: int,
    strategy: Strategy = typer.Option(
        Strategy.direct, help="direct switches now; the others start a rollout."),
    steps: str = typer.Option("", help="Canary weights in percent (default 5,25,50,100)."),
    interval: str = typer.Option("", help="Least time per step, e.g. 60s, 5m (default 60s)."),
    min_samples: int | None = typer.Option(
        None, help="Least joined labels per arm per step (default 200)."),
    max_drop: float | None = typer.Option(
        None, help="How much worse the candidate's quality may be (default 0.01)."),
    shadow_percent: float | None = typer.Option(
        None, help="Share of requests mirrored to a shadow, in percent (default 100)."),
    reason: str = ReasonOption,
    mode: str = typer.Option("live", help="direct only: live (learner's updates) or pinned."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
) -> None:
    """Send a model's traffic to a version: at once (direct) or by a rollout strategy."""
    async with RegistryClient(registry, actor="cli") as client:
        if strategy is Strategy.direct:
            tuning = (min_samples, max_drop, shadow_percent)
            if steps or interval or any(option is not None for option in tuning):
                raise typer.BadParameter("rollout options need a --strategy other than direct")
            deployment = await client.deploy(model, version, mode=mode)
            if output is Output.json:
                print_json(deployment)
            else:
                print_mapping(f"deployment of {model}", {
                    "routes": _routes(deployment), "mode": mode, "revision": deployment.revision})
            return
        policy = rollout_policy(
            parse_percents(steps) if steps else (),
            interval_s=parse_duration_s(interval) if interval else None,
            min_samples=min_samples, max_drop=max_drop, shadow_percent=shadow_percent,
        )  # fmt: skip
        started = await client.start_rollout(model, version, strategy.value, policy, reason=reason)
        _print_rollout(started, await client.get_deployment(model), output)


@rollout.command("status")
@registry_call
async def status(model: str, output: Output = OutputOption, registry: str = RegistryOption) -> None:
    """The model's active rollout (else its last one), its routes, and every live gateway replica.

    Each replica: its address, last heartbeat, the model's versions it has loaded
    (ready or not, warm-up latency) and what it answers with.
    """
    async with RegistryClient(registry) as client:
        found = await client.get_rollout(model)
        deployment = await client.get_deployment(model)
        replicas = await client.list_replicas(model)
    _print_rollout(found, deployment, output, replicas)


async def _transition(
    model: str, action: str, reason: str, expected_revision: int, output: Output, registry: str
) -> None:
    async with RegistryClient(registry, actor="cli") as client:
        moved = await client.transition_rollout(
            model, action, reason=reason, expected_revision=expected_revision)
        deployment = await client.get_deployment(model)
    if output is Output.json:
        _print_rollout(moved, deployment, output)
    else:
        state = _state(moved.state)
        console.print(f"rollout of {model}: {state} at step {moved.step} · {_routes(deployment)}")


def _transition_command(action: str, summary: str) -> None:
    @registry_call
    async def command(
        model: str,
        reason: str = ReasonOption,
        expected_revision: int = RevisionOption,
        output: Output = OutputOption,
        registry: str = RegistryOption,
    ) -> None:
        await _transition(model, action, reason, expected_revision, output, registry)

    command.__doc__ = summary
    rollout.command(action)(command)


_transition_command("pause", "Hold the rollout where it is (rollback and abort still work).")
_transition_command("resume", "Let a paused rollout move again (its step's clock starts over).")
_transition_command("advance", "Move to the next step now (the controller does it when due).")
_transition_command("promote", "Make the candidate the primary, alone: the rollout ends.")
_transition_command("rollback", "Put the baseline back alone: the candidate lost.")
_transition_command("abort", "Put the baseline back alone: the rollout is called off.")


@rollout.command("history")
@registry_call
async def history(
    model: str,
    limit: int = typer.Option(20, help="Most rollouts shown, newest first."),
    output: Output = OutputOption,
    registry: str = RegistryOption,
) -> None:
    """The model's rollouts, newest first: who moved each, when, why, on what evidence."""
    async with RegistryClient(registry) as client:
        found = await client.list_rollouts(model, limit)
    if output is Output.json:
        print_json(found)
        return
    if not found:
        console.print(f"model {model} has had no rollout")
    for entry in found:
        r = entry.rollout
        title = (f"{enums.STRATEGIES.get(r.strategy, '?')} of v{r.candidate_version} over "
                 f"v{r.baseline_version}: {_state(r.state)} ({r.id[:8]})")
        rows = [(
            t.at.ToDatetime().isoformat(timespec="seconds"),
            enums.ROLLOUT_ACTIONS.get(t.action, "?"),
            f"{_state(t.from_state, '-')} → {_state(t.to_state)}",
            t.step, t.actor, t.reason or "-",
            ", ".join(f"{k}={v:g}" for k, v in sorted(t.evidence.items())) or "-",
        ) for t in entry.transitions]  # fmt: skip
        print_table(title, ("at", "action", "state", "step", "actor", "reason", "evidence"), rows)
