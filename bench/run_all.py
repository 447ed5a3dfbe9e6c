"""Run every benchmark in turn (``make bench``); each writes bench/results/<name>.json.

``python -m bench.run_all [--only gateway trainer ...] [--profile]``

Each benchmark starts and stops its own processes, so one failing does not
leave anything running for the next; the exit code is non-zero when any failed.
``--profile`` also runs the cProfile passes (gateway process; trainer's first
repeat), which print where the time goes.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import (
    fetch_latency_bench,
    freshness_bench,
    gateway_bench,
    profile_gateway,
    trainer_bench,
    trainer_routes_bench,
)

BENCHMARKS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "gateway": gateway_bench.main,
    "trainer": trainer_bench.main,
    "trainer_routes": trainer_routes_bench.main,
    "freshness": freshness_bench.main,
    "fetch_latency": fetch_latency_bench.main,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--profile", action="store_true", help="also run the cProfile passes")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only:
        bench_argv: list[str] = []
        if args.profile and name == "trainer":
            bench_argv = ["--profile", str(Path("bench/results/trainer_profile.txt"))]
        failed += _run(name, BENCHMARKS[name], bench_argv)
    if args.profile and "gateway" in args.only:
        failed += _run("profile_gateway", profile_gateway.main, [])
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _run(name: str, bench: Callable[[Sequence[str] | None], int], argv: list[str]) -> list[str]:
    print(f"\n===== {name} {' '.join(argv)} =====", flush=True)
    started = time.monotonic()
    try:
        code = bench(argv)
    except Exception:
        traceback.print_exc()
        code = 1
    print(f"===== {name}: exit {code} in {time.monotonic() - started:.0f}s =====", flush=True)
    return [name] if code else []


if __name__ == "__main__":
    sys.exit(main())
