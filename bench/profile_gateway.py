"""Where the gateway's time goes: cProfile of the real gateway process under load.

``python -m bench.profile_gateway`` starts the same stack as
``bench.gateway_bench`` but runs the gateway as
``python -m cProfile -o FILE -m headwater.services.gateway``, drives ModelInfer
at one concurrency for a while, stops the gateway with SIGTERM (it exits
cleanly, so cProfile writes its stats) and prints the functions with the most
own time and the most cumulative time. cProfile slows every Python call, so
read the shares, not the absolute times; C code (protobuf, grpc core) shows up
only as the Python call that entered it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from bench import model
from bench.gateway_bench import MODEL_NAME, probe, start_gateway
from bench.load import drive
from bench.stack import BenchStack, running_stack
from headwater.shared.pb import oip_pb2_grpc

# pstats restrictions (regexes on "file:line(function)") of the request path.
HOT_PATH = (
    r"grpc_api.py:\d+\(ModelInfer\)",
    r"service.py:\d+\(infer\)",
    r"service.py:\d+\(_serve\)",
    r"service.py:\d+\(_publish\)",
    r"producer.py:\d+\(publish\)",
    r"producer.py:\d+\(_drain\)",
    r"producer.py:\d+\(_send_round\)",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gateway_profile.txt"))
    return parser.parse_args(argv)


async def load(stack: BenchStack, profile: Path, args: argparse.Namespace) -> str:
    gateway, _ = await start_gateway(stack, profile_to=profile)
    await probe(gateway)
    requests = [model.dense_request(MODEL_NAME, x) for x, _ in model.rows(256, seed=11)]
    async with grpc.aio.insecure_channel(gateway) as channel:
        stub = oip_pb2_grpc.GRPCInferenceServiceStub(channel)
        result = await drive(stub, requests, args.concurrency, args.duration_s)
    return (
        f"profiled load: concurrency {args.concurrency}, {result.ok} requests in "
        f"{result.elapsed_s:.1f}s ({result.rps:.0f} req/s under cProfile), errors {result.errors}"
    )


def report(profile: Path, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(profile), stream=out)
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        out.write(f"\n=== top {top} by {key} ===\n")
        stats.sort_stats(key).print_stats(top)
    out.write("\n=== what the request path calls ===\n")
    stats.sort_stats("cumulative")
    for function in HOT_PATH:
        stats.print_callees(function)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with running_stack("profile") as stack:
        profile = stack.workdir / "gateway.prof"
        summary = asyncio.run(load(stack, profile, args))
        code = stack.stop_process("gateway", timeout_s=20)
        if code != 0 or not profile.exists():
            raise RuntimeError(f"gateway exited with {code}; no profile written")
        text = summary + "\n" + report(profile, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
