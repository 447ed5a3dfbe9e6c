"""A closed-loop grpc.aio load generator for ModelInfer.

``concurrency`` workers share one channel; each sends a request, waits for the
answer, and sends the next, until the duration is over. Latency is measured in
the client (what a caller sees, queueing in the client's event loop included).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from bench.measure import percentile_ms
from headwater.shared.pb import oip_pb2, oip_pb2_grpc


@dataclass(frozen=True)
class LoadResult:
    """One measured point."""

    concurrency: int
    ok: int
    errors: dict[str, int]
    elapsed_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    latencies_ns: list[int] = field(repr=False, compare=False)


async def drive(
    stub: oip_pb2_grpc.GRPCInferenceServiceStub,
    requests: Sequence[oip_pb2.ModelInferRequest],
    concurrency: int,
    duration_s: float,
    timeout_s: float = 5.0,
) -> LoadResult:
    """Run ``concurrency`` closed-loop workers for ``duration_s``; bounded by the RPC timeout."""
    latencies: list[int] = []
    errors: Counter[str] = Counter()
    end = time.perf_counter() + duration_s

    async def worker(first: int) -> None:
        index = first
        while time.perf_counter() < end:
            request = requests[index % len(requests)]
            index += concurrency
            started = time.perf_counter_ns()
            try:
                await stub.ModelInfer(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
                continue
            latencies.append(time.perf_counter_ns() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    ok = len(latencies)
    return LoadResult(
        concurrency=concurrency,
        ok=ok,
        errors=dict(errors),
        elapsed_s=elapsed,
        rps=ok / elapsed,
        p50_ms=percentile_ms(latencies, 50),
        p99_ms=percentile_ms(latencies, 99),
        mean_ms=(sum(latencies) / ok / 1e6) if ok else float("nan"),
        latencies_ns=latencies,
    )
