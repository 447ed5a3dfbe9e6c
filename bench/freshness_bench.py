"""Freshness: from a label produced on ``feedback`` to the gateway serving a model that learned it.

``python -m bench.freshness_bench`` starts Tansu, PostgreSQL, the registry, the
gateway and the trainer as separate processes, deploys the binary
StandardScaler | LogisticRegression model (live mode, the default for an online
model) and waits until the trainer's consumer groups have joined. Then, one
label at a time:

1. ModelInfer with a fixed probe row: the answer carries the prediction id,
   the ``live_sequence`` of the served state and ``predict_proba``;
2. produce a FeedbackEvent for that prediction id on ``feedback`` (label: the
   class the model did *not* predict), time t0 taken just before the send;
3. poll the gateway with the same row every ``--poll-ms`` until the answer has
   a higher ``live_sequence`` *and* a different ``predict_proba``: t1.

Only these labels are ever learned, one at a time, so the first newer state
the gateway serves is the one that learned this label. Freshness is t1 - t0:
the trainer's join, the examples topic, the learner, the live sync (at most
one ModelUpdate per ``sync_interval_ms``, 250 ms by default), model-updates,
and the gateway's verified swap. A random pause between labels samples every
phase of the sync timer. At the end the trainer's learner must have learned
exactly as many examples as labels were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from bench import model
from bench.measure import CpuMeter, machine_info, percentile_ms, write_results
from bench.stack import SIGNING_KEY, BenchStack, running_stack, wait_http_ok, wait_serving
from bench.topics import read_topic
from headwater.services.gateway.service import PARAM_LIVE_SEQUENCE, PARAM_PREDICTION_IDS
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.codec import decode_event
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.topics import Topic
from headwater.shared.features import target_to_proto
from headwater.shared.oip_datatypes import typed_contents
from headwater.shared.pb import events_pb2, oip_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient

MODEL_NAME = "bench-fresh"
STAGES = {
    "join_ms": "label sent -> LabeledExample written by the join",
    "learn_sync_ms": "-> ModelUpdate written by the learner (live sync)",
    "gateway_ms": "-> gateway answers with it (incl. up to one poll)",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=20, help="measured labels")
    parser.add_argument("--warmup-labels", type=int, default=2, help="unmeasured first labels")
    parser.add_argument("--poll-ms", type=float, default=10.0)
    parser.add_argument("--label-timeout-s", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/freshness.json"))
    return parser.parse_args(argv)


class Probe:
    """Asks the gateway about one fixed row."""

    def __init__(self, stub: oip_pb2_grpc.GRPCInferenceServiceStub) -> None:
        self.stub = stub
        self.request = model.dense_request(MODEL_NAME, model.rows(1, seed=5)[0][0])

    async def ask(self) -> tuple[str, int, tuple[float, ...], bool]:
        """(prediction id, live sequence, predict_proba, predicted label)."""
        answer: oip_pb2.ModelInferResponse = await self.stub.ModelInfer(self.request, timeout=5)
        outputs = {o.name: o for o in answer.outputs}
        predict_proba, predict = outputs["predict_proba"], outputs["predict"]
        proba = tuple(typed_contents(predict_proba.contents, predict_proba.datatype))
        label = bool(typed_contents(predict.contents, predict.datatype)[0])
        return (
            answer.parameters[PARAM_PREDICTION_IDS].string_param,
            answer.parameters[PARAM_LIVE_SEQUENCE].int64_param,
            proba,
            label,
        )


async def one_label(
    probe: Probe, producer: EventProducer, poll_s: float, timeout_s: float
) -> dict[str, Any]:
    """Send one label for a fresh prediction and time until the gateway serves it learned."""
    prediction_id, sequence, proba, predicted = await probe.ask()
    feedback = events_pb2.FeedbackEvent(
        prediction_id=prediction_id, label=target_to_proto(not predicted)
    )
    feedback.observed_at.GetCurrentTime()
    started_wall_ms = time.time() * 1000
    started = time.perf_counter_ns()
    await producer.send_and_wait(Topic.FEEDBACK, prediction_id, feedback)
    acked = time.perf_counter_ns()
    deadline = time.monotonic() + timeout_s
    polls = 0
    while time.monotonic() < deadline:
        _, now_sequence, now_proba, _ = await probe.ask()
        polls += 1
        if now_sequence > sequence and now_proba != proba:
            seen = time.perf_counter_ns()
            return {
                "prediction_id": prediction_id,
                "started_wall_ms": started_wall_ms,
                "seen_wall_ms": time.time() * 1000,
                "freshness_ns": seen - started,
                "produce_ack_ns": acked - started,
                "sequence_from": sequence,
                "sequence_to": now_sequence,
                "polls": polls,
            }
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"label for {prediction_id} not served within {timeout_s}s")


async def learned(trainer_url: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session,
        session.get(f"{trainer_url}/v1/models") as reply,
    ):
        body = await reply.json()
    return sum(int(x["examples_learned"]) for x in body["learners"] if x["model"] == MODEL_NAME)


async def start(stack: BenchStack) -> tuple[str, str]:
    """Registry, model deployed live, gateway SERVING, trainer healthy: (gateway, trainer URL)."""
    await stack.create_topics()
    registry = stack.spawn_registry()
    await wait_serving(stack, "registry", registry)
    async with RegistryClient(registry, deadline_s=20, actor="bench") as client:
        await model.register(client, ArtifactCodec(SIGNING_KEY), MODEL_NAME)
    gateway, _ = stack.spawn_gateway(registry)
    trainer = stack.spawn_trainer(registry, app_id="bench-trainer")
    await wait_serving(stack, "gateway", gateway)
    await wait_http_ok(stack, "trainer", f"{trainer}/health")
    return gateway, trainer


async def run(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    gateway, trainer = await start(stack)
    print(f"stack up in {time.monotonic() - started:.1f}s", flush=True)
    producer = EventProducer(stack.kafka, client_id="bench-feedback")
    await producer.start()
    samples: list[dict[str, Any]] = []
    rng = random.Random(1)
    try:
        async with grpc.aio.insecure_channel(gateway) as channel:
            probe = Probe(oip_pb2_grpc.GRPCInferenceServiceStub(channel))
            meter = CpuMeter({"bench": os.getpid(), **stack.pids()})
            for index in range(args.warmup_labels + args.labels):
                if index == args.warmup_labels:
                    meter.restart()
                sample = await one_label(probe, producer, args.poll_ms / 1000, args.label_timeout_s)
                sample["warmup"] = index < args.warmup_labels
                samples.append(sample)
                print(
                    f"label {index}: {sample['freshness_ns'] / 1e6:.0f} ms"
                    f"{' (warm-up)' if sample['warmup'] else ''}",
                    flush=True,
                )
                await asyncio.sleep(rng.uniform(0.0, 0.3))
            cpu = meter.sample()
    finally:
        await producer.stop(grace_s=2)
    total = await learned(trainer)
    await add_stages(stack, samples)
    return {"samples": samples, "learned": total, "cpu": cpu}


async def add_stages(stack: BenchStack, samples: list[dict[str, Any]]) -> None:
    """Split each freshness into stages by the timestamps of the records the services wrote.

    join: label sent -> its LabeledExample written by the trainer's join;
    learn+sync: -> the ModelUpdate the gateway then served written by the learner;
    gateway: -> the gateway answering with it (includes up to one poll interval).
    Record timestamps are the producers' clocks at send, on this same machine, in ms.
    """
    examples, _ = await read_topic(stack.kafka, Topic.EXAMPLES)
    updates, _ = await read_topic(stack.kafka, Topic.MODEL_UPDATES)
    example_ms: dict[str, int] = {}
    for record in examples:
        example = decode_event(events_pb2.LabeledExample, record.value, record.headers)
        example_ms[example.prediction_id] = record.timestamp
    update_ms: dict[int, int] = {}
    for record in updates:
        update = decode_event(events_pb2.ModelUpdate, record.value, record.headers)
        if update.model == MODEL_NAME:
            update_ms[update.sequence] = record.timestamp
    for sample in samples:
        written = example_ms.get(sample["prediction_id"])
        served = update_ms.get(sample["sequence_to"])
        if written is None or served is None:
            continue
        sample["join_ms"] = written - sample["started_wall_ms"]
        sample["learn_sync_ms"] = served - written
        sample["gateway_ms"] = sample["seen_wall_ms"] - served


def summarize(results: dict[str, Any], labels_sent: int) -> dict[str, Any]:
    measured = [s["freshness_ns"] for s in results["samples"] if not s["warmup"]]
    acks = [s["produce_ack_ns"] for s in results["samples"] if not s["warmup"]]
    cpu = results["cpu"]
    stages = {}
    for stage in ("join_ms", "learn_sync_ms", "gateway_ms"):
        values = [s[stage] * 1e6 for s in results["samples"] if not s["warmup"] and stage in s]
        stages[stage] = {
            "p50": round(percentile_ms(values, 50), 1),
            "p95": round(percentile_ms(values, 95), 1),
        }
    return {
        "stages": stages,
        "labels": len(measured),
        "p50_ms": round(percentile_ms(measured, 50), 1),
        "p95_ms": round(percentile_ms(measured, 95), 1),
        "min_ms": round(min(measured) / 1e6, 1),
        "max_ms": round(max(measured) / 1e6, 1),
        "feedback_ack_p50_ms": round(percentile_ms(acks, 50), 1),
        "examples_learned": results["learned"],
        "labels_sent": labels_sent,
        "others_cores": round(cpu.others_cores, 2),
        "steal_cores": round(cpu.steal_cores, 2),
    }


def markdown(summary: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| labels | p50 ms | p95 ms | min ms | max ms | feedback produce+ack p50 ms "
            "| learned / sent | other processes' cores |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {summary['labels']} | {summary['p50_ms']} | {summary['p95_ms']} "
            f"| {summary['min_ms']} | {summary['max_ms']} | {summary['feedback_ack_p50_ms']} "
            f"| {summary['examples_learned']} / {summary['labels_sent']} "
            f"| {summary['others_cores']} |",
            "",
            "| stage | p50 ms | p95 ms |",
            "| --- | ---: | ---: |",
            *(
                f"| {STAGES[name]} | {values['p50']} | {values['p95']} |"
                for name, values in summary["stages"].items()
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    with running_stack("freshness") as stack:
        results = asyncio.run(run(stack, args))
    summary = summarize(results, args.warmup_labels + args.labels)
    table = markdown(summary)
    out = {
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "settings": {
            "labels": args.labels,
            "warmup_labels": args.warmup_labels,
            "poll_ms": args.poll_ms,
            "trainer": "defaults (sync_interval_ms 250)",
        },
        "summary": summary,
        "samples": results["samples"],
        "markdown": table,
    }
    write_results(args.out, out)
    print()
    print(table)
    if summary["examples_learned"] != summary["labels_sent"]:
        print("WARNING: the learner did not learn exactly one example per label", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
