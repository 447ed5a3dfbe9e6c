"""Gateway ModelInfer throughput and latency against the bare-gRPC ceiling.

``python -m bench.gateway_bench`` starts Tansu, PostgreSQL, the registry and the
gateway (``python -m headwater.services.gateway``) as separate processes,
registers and deploys a binary StandardScaler | LogisticRegression model on 6
float features, and drives ModelInfer (batch 1, one dense FP64 ``[1, 6]``
tensor) from a grpc.aio client in this process at each concurrency. Prediction
publishing is on (the gateway always publishes); the events are counted on the
gateway's own counters and on the ``predictions`` topic's end offsets.

In the same run, and interleaved point by point with the gateway, the same
client drives ``bench.echo_server``: a bare grpc.aio server answering a
pre-built copy of a real gateway response. The gateway is reported as a ratio
of that ceiling, measured minutes apart at most, on the same loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from bench import model
from bench.load import LoadResult, drive
from bench.measure import (
    CpuMeter,
    CpuSample,
    Spread,
    counter_sum,
    machine_info,
    scrape_counters,
    write_results,
)
from bench.stack import SIGNING_KEY, BenchStack, running_stack, wait_serving
from bench.topics import read_topic
from headwater.cli.localstack import free_port
from headwater.services.gateway.service import PARAM_PREDICTION_IDS, PARAM_VERSION
from headwater.shared.artifacts import ArtifactCodec
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import oip_pb2, oip_pb2_grpc
from headwater.shared.registry_client import RegistryClient
from headwater.shared.settings import KafkaSettings

MODEL_NAME = "bench-binary"
BUFFERED = "headwater_gateway_prediction_events_buffered_total"
DROPPED = "headwater_gateway_prediction_events_dropped_total"
ACKED = "headwater_bus_events_published_total"
FAILED = "headwater_bus_events_failed_total"
TARGETS = ("ceiling", "gateway")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--duration-s", type=float, default=4.0, help="measured time per point")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="unmeasured time per point")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gateway.json"))
    return parser.parse_args(argv)


class Events:
    """The gateway's prediction-event counters, read from its /metrics page."""

    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url

    async def read(self) -> dict[str, float]:
        samples = await asyncio.to_thread(scrape_counters, self.url)
        return {
            "buffered": counter_sum(samples, BUFFERED, model=MODEL_NAME),
            "dropped": counter_sum(samples, DROPPED, model=MODEL_NAME),
            "acked": counter_sum(samples, ACKED, topic=Topic.PREDICTIONS.value),
            "failed": counter_sum(samples, FAILED, topic=Topic.PREDICTIONS.value),
        }


async def count_topic(kafka: KafkaSettings, topic: Topic) -> dict[str, int]:
    """Read ``topic`` back: records, distinct keys, and the sum of its end offsets."""
    records, end_offsets = await read_topic(kafka, topic)
    keys = {record.key for record in records}
    return {"end_offsets": end_offsets, "records": len(records), "distinct_keys": len(keys)}


def _write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def start_gateway(stack: BenchStack, profile_to: Path | None = None) -> tuple[str, str]:
    """Registry up, model registered and deployed, gateway SERVING: (gateway, metrics URL)."""
    await stack.create_topics()
    registry = stack.spawn_registry()
    await wait_serving(stack, "registry", registry)
    async with RegistryClient(registry, deadline_s=20, actor="bench") as client:
        await model.register(client, ArtifactCodec(SIGNING_KEY), MODEL_NAME)
    gateway, metrics_url = stack.spawn_gateway(registry, profile_to=profile_to)
    await wait_serving(stack, "gateway", gateway)
    return gateway, metrics_url


async def probe(gateway: str) -> oip_pb2.ModelInferResponse:
    """One ModelInfer that must answer version 1 with a prediction id."""
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = model.dense_request(MODEL_NAME, model.rows(1)[0][0])
        answer = await stub.ModelInfer(request, timeout=10)
    if (
        answer.parameters[PARAM_VERSION].int64_param != 1
        or not answer.parameters[PARAM_PREDICTION_IDS].string_param
    ):
        raise RuntimeError(f"unexpected gateway answer: {answer}")
    return answer


async def start_ceiling(stack: BenchStack, answer: oip_pb2.ModelInferResponse) -> str:
    """The echo server answering ``answer``; returns its target once SERVING."""
    response_file = stack.workdir / "response.bin"
    _write_bytes(response_file, answer.SerializeToString())
    echo_port = free_port()
    stack.spawn(
        "ceiling",
        ["-m", "bench.echo_server", "--port", str(echo_port), "--response", str(response_file)],
        stack.env(),
    )
    echo = f"127.0.0.1:{echo_port}"
    await wait_serving(stack, "ceiling", echo)
    return echo


def _point(result: LoadResult, cpu: CpuSample, events: dict[str, float] | None) -> dict[str, Any]:
    return {
        "concurrency": result.concurrency,
        "ok": result.ok,
        "errors": result.errors,
        "elapsed_s": round(result.elapsed_s, 3),
        "rps": round(result.rps, 1),
        "p50_ms": round(result.p50_ms, 3),
        "p99_ms": round(result.p99_ms, 3),
        "mean_ms": round(result.mean_ms, 3),
        "cpu": {
            "busy_cores": round(cpu.busy_cores, 3),
            "ours_cores": round(cpu.ours_cores, 3),
            "others_cores": round(cpu.others_cores, 3),
            "steal_cores": round(cpu.steal_cores, 3),
            "per_process_cores": {k: round(v, 3) for k, v in cpu.per_process_cores.items()},
        },
        "events": events,
    }


async def measure(
    stack: BenchStack, gateway: str, echo: str, metrics_url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Every point, ``repeats`` times, the ceiling and the gateway interleaved."""
    requests = [model.dense_request(MODEL_NAME, x) for x, _ in model.rows(256, seed=11)]
    events = Events(metrics_url)
    points: list[dict[str, Any]] = []
    sent_to_gateway = 1  # the probe
    async with (
        grpc.aio.insecure_channel(gateway) as gw_channel,
        grpc.aio.insecure_channel(echo) as echo_channel,
    ):
        stubs = {
            "gateway": oip_pb2_grpc.GRPCInferenceServiceStub(gw_channel),
            "ceiling": oip_pb2_grpc.GRPCInferenceServiceStub(echo_channel),
        }
        for target in TARGETS:  # JIT-free Python, but caches, connections and allocators warm up
            warm = await drive(stubs[target], requests, 8, 2.0)
            sent_to_gateway += warm.ok if target == "gateway" else 0
        meter = CpuMeter({"client": os.getpid(), **stack.pids()})
        await asyncio.sleep(3.0)
        idle = meter.sample()
        print(f"idle: others use {idle.others_cores:.2f} cores, steal {idle.steal_cores:.2f}")
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                order = TARGETS if repeat % 2 == 0 else TARGETS[::-1]
                for target in order:
                    warm = await drive(stubs[target], requests, concurrency, args.warmup_s)
                    before = await events.read() if target == "gateway" else None
                    meter.restart()
                    result = await drive(stubs[target], requests, concurrency, args.duration_s)
                    cpu = meter.sample()
                    delta = None
                    if before is not None:
                        after = await events.read()
                        delta = {k: after[k] - before[k] for k in after}
                        sent_to_gateway += warm.ok + result.ok
                    point = {"repeat": repeat, "target": target, **_point(result, cpu, delta)}
                    points.append(point)
                    print(_progress_line(point), flush=True)
    proof = await prove_events(stack.kafka, events, sent_to_gateway)
    return {"idle": _point_cpu(idle), "points": points, "events": proof}


def _point_cpu(cpu: CpuSample) -> dict[str, float]:
    return {"others_cores": round(cpu.others_cores, 3), "steal_cores": round(cpu.steal_cores, 3)}


def _progress_line(point: dict[str, Any]) -> str:
    cpu = point["cpu"]
    return (
        f"r{point['repeat']} c={point['concurrency']:<3} {point['target']:<8} "
        f"{point['rps']:>8.0f} req/s  p50 {point['p50_ms']:.2f} ms  p99 {point['p99_ms']:.2f} ms  "
        f"errors {point['errors'] or 0}  others {cpu['others_cores']:.2f} cores  "
        f"events {point['events']}"
    )


async def prove_events(kafka: KafkaSettings, events: Events, sent: int) -> dict[str, Any]:
    """Wait (bounded) until the gateway's producer acknowledged ``sent`` events; count the topic."""
    deadline = time.monotonic() + 30.0
    counters = await events.read()
    while counters["acked"] + counters["failed"] < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        counters = await events.read()
    topic = await count_topic(kafka, Topic.PREDICTIONS)
    return {"requests_ok_to_gateway": sent, **counters, "predictions_topic": topic}


def summarize(results: dict[str, Any], concurrencies: Sequence[int]) -> list[dict[str, Any]]:
    """Per concurrency: spreads over repeats of req/s, p50, p99, CPU, gateway/ceiling."""
    rows = []
    points = results["points"]
    for concurrency in concurrencies:
        row: dict[str, Any] = {"concurrency": concurrency}
        at = [p for p in points if p["concurrency"] == concurrency]
        for target in TARGETS:
            mine = [p for p in at if p["target"] == target]
            row[target] = {
                key: Spread.of(p[key] for p in mine) for key in ("rps", "p50_ms", "p99_ms")
            }
            row[target]["server_cores"] = Spread.of(
                p["cpu"]["per_process_cores"].get(target, float("nan")) for p in mine
            )
            row[target]["client_cores"] = Spread.of(
                p["cpu"]["per_process_cores"]["client"] for p in mine
            )
            row[target]["others_cores"] = Spread.of(p["cpu"]["others_cores"] for p in mine)
            row[target]["errors"] = sum(sum(p["errors"].values()) for p in mine)
        ratios = []
        for repeat in sorted({p["repeat"] for p in at}):
            pair = {p["target"]: p["rps"] for p in at if p["repeat"] == repeat}
            ratios.append(pair["gateway"] / pair["ceiling"])
        row["ratio"] = Spread.of(ratios)
        rows.append(row)
    return rows


def markdown(summary: list[dict[str, Any]], results: dict[str, Any]) -> str:
    """The tables BENCHMARKS.md shows."""
    lines = [
        "| concurrency | bare gRPC req/s | gateway req/s | gateway / ceiling "
        "| bare p50 ms | gateway p50 ms | bare p99 ms | gateway p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        c, g = row["ceiling"], row["gateway"]
        lines.append(
            f"| {row['concurrency']} | {c['rps'].text()} | {g['rps'].text()} "
            f"| {row['ratio'].text(2)} | {c['p50_ms'].text(2)} | {g['p50_ms'].text(2)} "
            f"| {c['p99_ms'].text(2)} | {g['p99_ms'].text(2)} |"
        )
    lines += [
        "",
        "| concurrency | target | server process cores | client process cores "
        "| other processes' cores | errors |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in summary:
        for target in TARGETS:
            t = row[target]
            lines.append(
                f"| {row['concurrency']} | {target} | {t['server_cores'].text(2)} "
                f"| {t['client_cores'].text(2)} | {t['others_cores'].text(2)} | {t['errors']} |"
            )
    ev = results["events"]
    topic = ev["predictions_topic"]
    lines += [
        "",
        f"Prediction events: {ev['requests_ok_to_gateway']} successful ModelInfer calls to the "
        f"gateway (warm-ups included); the gateway buffered {ev['buffered']:.0f} PredictionEvents, "
        f"dropped {ev['dropped']:.0f}; the broker acknowledged {ev['acked']:.0f} "
        f"(failed {ev['failed']:.0f}); reading the `predictions` topic back found "
        f"{topic['records']} records with {topic['distinct_keys']} distinct prediction ids "
        f"(sum of end offsets {topic['end_offsets']}).",
    ]
    return "\n".join(lines)


def _spread_json(value: object) -> object:
    if isinstance(value, Spread):
        return {"median": value.median, "min": value.low, "max": value.high}
    raise TypeError(type(value).__name__)


async def run(stack: BenchStack, args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    started = time.monotonic()
    gateway, metrics_url = await start_gateway(stack)
    echo = await start_ceiling(stack, await probe(gateway))
    print(f"stack up in {time.monotonic() - started:.1f}s", flush=True)
    results = await measure(stack, gateway, echo, metrics_url, args)
    results["machine"] = {**info, "loadavg_at_end": os.getloadavg()}
    results["settings"] = {
        "concurrency": args.concurrency,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "repeats": args.repeats,
        "model": model.SPEC,
        "features": model.N_FEATURES,
        "request": "batch 1, one dense FP64 [1, 6] tensor, typed contents",
    }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with running_stack("gateway") as stack:
        results = asyncio.run(run(stack, args))
    summary = summarize(results, args.concurrency)
    results["summary"] = json.loads(json.dumps(summary, default=_spread_json))
    table = markdown(summary, results)
    results["markdown"] = table
    write_results(args.out, results)
    print()
    print(table)
    print(f"\nidle before measuring: {results['idle']}; machine: {results['machine']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
