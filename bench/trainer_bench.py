"""Trainer learning rate from Kafka against River's in-process ``learn_one``.

``python -m bench.trainer_bench`` starts Tansu and PostgreSQL once; then, for
each repeat, on topics of its own (a fresh topic prefix, so every consumer
group is new and starts from the beginning):

1. starts the registry, registers and deploys the binary StandardScaler |
   LogisticRegression model (version 1, trained on 500 rows);
2. writes N LabeledExamples for it to ``examples`` while no trainer runs, so
   the trainer finds a backlog and nothing else limits it;
3. starts the trainer (``python -m headwater.services.trainer``, default
   settings: live sync every 250 ms, a checkpoint version every 500 examples)
   and polls its ``/v1/models`` until the learner has learned all N; the rate
   is counted from the first poll that saw a learned example to the first that
   saw all N (the group join and the model load are excluded);
4. stops the trainer and the registry, then times River on the same examples
   from the same starting model (the deployed artifact, decoded), in this
   process: ``learn_one`` alone, and ``predict_proba_one`` + ``learn_one`` (the
   learner tests then trains: progressive validation); median of 3 passes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench import model
from bench.measure import CpuMeter, Spread, machine_info, write_results
from bench.stack import SIGNING_KEY, BenchStack, running_stack, wait_serving
from headwater.shared.artifacts import ArtifactCodec, SignedArtifact
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.errors import ResourceExhausted
from headwater.shared.features import (
    features_from_proto,
    features_to_proto,
    target_from_proto,
    target_to_proto,
)
from headwater.shared.pb import events_pb2
from headwater.shared.registry_client import RegistryClient

POLL_S = 0.05


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=40_000, help="N per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--learn-timeout-s", type=float, default=60.0)
    parser.add_argument(
        "--trainer-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a HEADWATER_TRAINER_<KEY> override, e.g. max_poll_records=2000 (repeatable)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="add one unmeasured repeat with the trainer under cProfile; write its top "
        "functions here",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/trainer.json"))
    return parser.parse_args(argv)


def labelled_examples(name: str, count: int, seed: int) -> list[events_pb2.LabeledExample]:
    """``count`` LabeledExamples of ``name`` with unique ids."""
    return [
        events_pb2.LabeledExample(
            example_id=uuid.uuid4().hex,
            model=name,
            features=features_to_proto(x),
            label=target_to_proto(y),
        )
        for x, y in model.rows(count, seed=seed)
    ]


async def produce(stack: BenchStack, examples: list[events_pb2.LabeledExample]) -> float:
    """Write the examples to ``examples`` (keyed by model) and wait for every ack; seconds."""
    producer = EventProducer(stack.kafka, client_id="bench-examples")
    await producer.start()
    started = time.monotonic()
    try:
        for example in examples:
            while True:
                try:
                    producer.publish(Topic.EXAMPLES, example.model, example)
                    break
                except ResourceExhausted:  # buffer full: let it drain
                    await asyncio.sleep(0.01)
        await producer.flush(timeout_s=60)
    finally:
        await producer.stop(grace_s=5)
    if producer.published != len(examples):
        raise RuntimeError(f"{producer.published} of {len(examples)} examples acknowledged")
    return time.monotonic() - started


async def learned(session: aiohttp.ClientSession, url: str, name: str, learners: int = 1) -> int:
    """How many examples every learner of ``name`` has learned (0 until ``learners`` exist)."""
    try:
        async with session.get(f"{url}/v1/models") as reply:
            body = await reply.json()
    except (aiohttp.ClientError, TimeoutError):  # not listening yet
        return 0
    counts = [int(x["examples_learned"]) for x in body["learners"] if x["model"] == name]
    return min(counts) if len(counts) >= learners else 0


async def watch_learning(
    stack: BenchStack,
    trainer: str,
    url: str,
    name: str,
    total: int,
    timeout_s: float,
    learners: int = 1,
) -> dict[str, Any]:
    """Poll until every one of the model's ``learners`` has learned ``total`` examples.

    The rate is counted between the first sighting of a learned example (by all
    of them) and the last poll.
    """
    meter = CpuMeter({"trainer": stack.processes[trainer].pid})
    deadline = time.monotonic() + timeout_s
    first: tuple[float, int] | None = None
    count = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while time.monotonic() < deadline:
            count = await learned(session, url, name, learners)
            now = time.monotonic()
            if count and first is None:
                first = (now, count)
                meter.restart()
            if count >= total:
                break
            if stack.processes[trainer].poll() is not None:
                raise RuntimeError(f"trainer exited:\n{stack.log_tail(trainer)}")
            await asyncio.sleep(POLL_S)
    cpu = meter.sample()
    if first is None or count < total or now <= first[0]:
        raise TimeoutError(
            f"learned {count} of {total} in {timeout_s}s:\n{stack.log_tail(trainer)}"
        )
    seconds = now - first[0]
    return {
        "learned": count,
        "counted": count - first[1],
        "seconds": round(seconds, 3),
        "rate": (count - first[1]) / seconds,
        "trainer_cores": round(cpu.per_process_cores["trainer"], 3),
        "others_cores": round(cpu.others_cores, 3),
        "steal_cores": round(cpu.steal_cores, 3),
    }


def river_rates(
    artifact: SignedArtifact, examples: list[events_pb2.LabeledExample], passes: int = 3
) -> dict[str, float]:
    """River in this process on the same rows, from the same starting model; median of passes."""
    codec = ArtifactCodec(SIGNING_KEY)
    rows = [(features_from_proto(e.features), target_from_proto(e.label)) for e in examples]
    learn, test_then_train = [], []
    for _ in range(passes):
        estimator = codec.decode(artifact.content, artifact.signature)
        started = time.perf_counter()
        for x, y in rows:
            estimator.learn_one(x, y)
        learn.append(len(rows) / (time.perf_counter() - started))
        estimator = codec.decode(artifact.content, artifact.signature)
        started = time.perf_counter()
        for x, y in rows:
            estimator.predict_proba_one(x)
            estimator.learn_one(x, y)
        test_then_train.append(len(rows) / (time.perf_counter() - started))
    return {
        "learn_one": statistics.median(learn),
        "predict_then_learn": statistics.median(test_then_train),
    }


async def one_repeat(stack: BenchStack, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    stack.topic_prefix = f"bench{repeat}-{uuid.uuid4().hex[:6]}."
    await stack.create_topics()
    name = f"bench-train-{repeat}"
    registry_name, trainer_name = f"registry-{repeat}", f"trainer-{repeat}"
    registry = stack.spawn_registry(registry_name)
    await wait_serving(stack, registry_name, registry)
    codec = ArtifactCodec(SIGNING_KEY)
    start_model = model.trained()
    artifact = codec.encode(start_model)
    async with RegistryClient(registry, deadline_s=20, actor="bench") as client:
        await model.register(client, codec, name, start_model)
    examples = labelled_examples(name, args.examples, seed=100 + repeat)
    produce_s = await produce(stack, examples)
    extra = dict(setting.split("=", 1) for setting in args.trainer_setting)
    profile = stack.workdir / "trainer.prof" if repeat == args.repeats else None
    url = stack.spawn_trainer(
        registry, trainer_name, profile, app_id=f"bench-trainer-{repeat}", **extra
    )
    result = await watch_learning(
        stack, trainer_name, url, name, len(examples), args.learn_timeout_s
    )
    code = stack.stop_process(trainer_name, timeout_s=20)
    stack.stop_process(registry_name)
    if profile is not None:
        write_profile(profile, args.profile, code)
    river = river_rates(artifact, examples)
    result.update(
        repeat=repeat,
        produce_s=round(produce_s, 3),
        river_learn_one=round(river["learn_one"], 1),
        river_predict_then_learn=round(river["predict_then_learn"], 1),
        ratio_learn_one=result["rate"] / river["learn_one"],
        ratio_predict_then_learn=result["rate"] / river["predict_then_learn"],
    )
    result["rate"] = round(result["rate"], 1)
    print(json.dumps(result), flush=True)
    return result


def write_profile(profile: Path, out: Path, exit_code: int | None) -> None:
    """The trainer's top functions by own and cumulative time (cProfile slows every call)."""
    if not profile.exists():
        print(f"no trainer profile written (exit code {exit_code})", file=sys.stderr)
        return
    text = io.StringIO()
    stats = pstats.Stats(str(profile), stream=text)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        text.write(f"\n=== top 40 by {key} ===\n")
        stats.sort_stats(key).print_stats(40)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())


def markdown(repeats: list[dict[str, Any]], examples: int) -> str:
    def spread(key: str, digits: int = 0) -> str:
        return Spread.of(r[key] for r in repeats).text(digits)

    return "\n".join(
        [
            "| quantity | median (min-max) |",
            "| --- | ---: |",
            f"| trainer, examples/s learned from Kafka | {spread('rate')} |",
            f"| River `learn_one`, examples/s in-process | {spread('river_learn_one')} |",
            "| River `predict_proba_one` + `learn_one`, examples/s "
            f"| {spread('river_predict_then_learn')} |",
            f"| trainer / River `learn_one` | {spread('ratio_learn_one', 2)} |",
            f"| trainer / River test-then-train | {spread('ratio_predict_then_learn', 2)} |",
            f"| trainer process CPU while learning, cores | {spread('trainer_cores', 2)} |",
            f"| other processes' CPU while learning, cores | {spread('others_cores', 2)} |",
            "",
            f"{examples} examples per repeat, {len(repeats)} repeats.",
        ]
    )


async def run(stack: BenchStack, args: argparse.Namespace) -> list[dict[str, Any]]:
    repeats = [await one_repeat(stack, repeat, args) for repeat in range(args.repeats)]
    if args.profile:  # cProfile slows the trainer: this repeat is not counted
        await one_repeat(stack, args.repeats, args)
    return repeats


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    with running_stack("trainer") as stack:
        repeats = asyncio.run(run(stack, args))
    table = markdown(repeats, args.examples)
    results = {
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "settings": {
            "examples": args.examples,
            "repeats": args.repeats,
            "trainer_settings": args.trainer_setting or "defaults",
            "model": model.SPEC,
        },
        "repeats": repeats,
        "markdown": table,
    }
    write_results(args.out, results)
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
