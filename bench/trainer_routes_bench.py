"""Trainer learning rate and CPU with 1, 2 and 4 routed versions of one model.

Every routed version of a model has its own learner, and each learns every
example, so the trainer's CPU per example should grow about linearly with the
number of routes. ``python -m bench.trainer_routes_bench`` starts Tansu and
PostgreSQL once; then, per repeat, for each route count k (in alternating
order per repeat, so machine noise spreads over all counts), on topics of its
own (a fresh prefix: every consumer group is new):

1. starts the registry, registers the trained StandardScaler |
   LogisticRegression model k times (versions 1..k, the same starting state,
   so every learner does the same work) and deploys version 1 as the primary
   and versions 2..k as challengers (weight 0: they learn, serve nothing);
2. writes N LabeledExamples to ``examples`` while no trainer runs (a backlog);
3. starts the trainer (default settings, as ``trainer_bench``) and polls
   ``/v1/models`` until all k learners have learned all N; the rate (example
   records per second, each learned k times) is counted from the first poll
   that saw every learner with a learned example to the first that saw all N,
   and the trainer process's CPU over the same interval;
4. stops the trainer and the registry.

It reports, per k, examples/s, trainer cores, trainer CPU per example, and the
ratios to k = 1: CPU per example (about k when learning dominates, less by the
per-record cost every learner shares: fetching, decoding, committing), time
per example, and the cost of each added route relative to the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import model
from bench.measure import Spread, machine_info, write_results
from bench.stack import SIGNING_KEY, BenchStack, running_stack, wait_serving
from bench.trainer_bench import labelled_examples, produce, watch_learning
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.registry_client import RegistryClient


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", default="1,2,4", help="route counts, comma-separated")
    parser.add_argument("--examples", type=int, default=40_000, help="N per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--learn-timeout-s", type=float, default=60.0, help="per run, times the route count"
    )
    parser.add_argument(
        "--trainer-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a HEADWATER_TRAINER_<KEY> override, e.g. max_poll_records=2000 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/trainer_routes.json"))
    args = parser.parse_args(argv)
    args.route_counts = sorted({int(k) for k in args.routes.split(",")})
    if not args.route_counts or args.route_counts[0] < 1:
        parser.error("--routes: positive counts, e.g. 1,2,4")
    return args


async def deploy_routes(client: RegistryClient, name: str, routes: int) -> None:
    """The trained model registered ``routes`` times; v1 primary, the others challengers."""
    codec = ArtifactCodec(SIGNING_KEY)
    start = model.trained()
    await model.register(client, codec, name, start)
    artifact = codec.encode(start)
    for _ in range(routes - 1):
        await client.create_version(
            name, model.SPEC, artifact=artifact.content, artifact_signature=artifact.signature
        )
    challengers = [(v, 0.0, "challenger") for v in range(2, routes + 1)]
    await client.set_deployment(name, [(1, 1.0, "primary"), *challengers])


async def one_run(
    stack: BenchStack, repeat: int, routes: int, args: argparse.Namespace
) -> dict[str, Any]:
    tag = f"r{repeat}k{routes}"
    stack.topic_prefix = f"bench-{tag}-{uuid.uuid4().hex[:6]}."
    await stack.create_topics()
    name = f"bench-routes-{tag}"
    registry_name, trainer_name = f"registry-{tag}", f"trainer-{tag}"
    registry = stack.spawn_registry(registry_name)
    await wait_serving(stack, registry_name, registry)
    async with RegistryClient(registry, deadline_s=20, actor="bench") as client:
        await deploy_routes(client, name, routes)
    examples = labelled_examples(name, args.examples, seed=200 + repeat)
    await produce(stack, examples)
    extra = dict(setting.split("=", 1) for setting in args.trainer_setting)
    url = stack.spawn_trainer(registry, trainer_name, app_id=f"bench-trainer-{tag}", **extra)
    result = await watch_learning(
        stack, trainer_name, url, name, len(examples), args.learn_timeout_s * routes, routes
    )
    stack.stop_process(trainer_name, timeout_s=20)
    stack.stop_process(registry_name)
    cpu_us = 1e6 * result["trainer_cores"] / result["rate"]
    result.update(repeat=repeat, routes=routes, trainer_cpu_us_per_example=round(cpu_us, 1))
    result["rate"] = round(result["rate"], 1)
    print(json.dumps(result), flush=True)
    return result


def with_ratios(runs: list[dict[str, Any]]) -> None:
    """Add each run's ratios to the k = 1 run of its repeat (in place)."""
    single = {r["repeat"]: r for r in runs if r["routes"] == 1}
    for run in runs:
        base = single.get(run["repeat"])
        if base is None:
            continue
        cpu = run["trainer_cpu_us_per_example"] / base["trainer_cpu_us_per_example"]
        run["cpu_per_example_ratio"] = round(cpu, 3)
        run["time_per_example_ratio"] = round(base["rate"] / run["rate"], 3)
        if run["routes"] > 1:  # 1.0: each route costs what the first did
            run["added_route_cost"] = round((cpu - 1) / (run["routes"] - 1), 3)


def markdown(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| routes | examples/s | trainer cores | trainer µs CPU / example "
        "| CPU / example vs 1 route | time / example vs 1 route | each added route vs the first |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in args.route_counts:
        of_k = [r for r in runs if r["routes"] == k]

        def spread(key: str, digits: int = 0, rows: list = of_k) -> str:
            values = [r[key] for r in rows if key in r]
            return Spread.of(values).text(digits) if values else "-"

        lines.append(
            f"| {k} | {spread('rate')} | {spread('trainer_cores', 2)} "
            f"| {spread('trainer_cpu_us_per_example', 1)} | {spread('cpu_per_example_ratio', 2)} "
            f"| {spread('time_per_example_ratio', 2)} | {spread('added_route_cost', 2)} |"
        )
    lines += [
        "",
        f"{args.examples} examples per run, {args.repeats} repeats; medians (min-max). "
        "Linear growth: CPU / example vs 1 route close to a + (1 - a)·k, each added route "
        "costing about the same.",
    ]
    return "\n".join(lines)


async def run(stack: BenchStack, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = []
    for repeat in range(args.repeats):
        order = args.route_counts if repeat % 2 == 0 else list(reversed(args.route_counts))
        for routes in order:
            runs.append(await one_run(stack, repeat, routes, args))
    with_ratios(runs)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    with running_stack("trainer_routes") as stack:
        runs = asyncio.run(run(stack, args))
    table = markdown(runs, args)
    summary = {
        str(k): statistics.median(r["cpu_per_example_ratio"] for r in runs if r["routes"] == k)
        for k in args.route_counts
        if any("cpu_per_example_ratio" in r for r in runs if r["routes"] == k)
    }
    results = {
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "settings": {
            "routes": args.route_counts,
            "examples": args.examples,
            "repeats": args.repeats,
            "trainer_settings": args.trainer_setting or "defaults",
            "model": model.SPEC,
        },
        "runs": runs,
        "median_cpu_per_example_ratio": summary,
        "markdown": table,
    }
    write_results(args.out, results)
    print()
    print(table)
    print(f"\nCPU per example vs 1 route (median): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
