"""Measuring helpers: percentiles, spread over repeats, machine noise, counters, results files.

The machine is shared: other engineers' tests run on the same cores. So every
benchmark compares numbers measured in the same run, repeats each point, and
records how busy the machine was with *other* processes while it measured:
:class:`CpuMeter` takes the system-wide busy CPU time, subtracts the CPU time
of the benchmark's own processes, and reports the rest in cores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families


def percentile_ms(latencies_ns: Sequence[int], q: float) -> float:
    """The ``q``-th percentile of latencies in ns, in ms (nan when empty).

    >>> percentile_ms([1_000_000, 2_000_000, 3_000_000], 50)
    2.0
    """
    if not latencies_ns:
        return float("nan")
    return float(np.percentile(np.asarray(latencies_ns, dtype=np.float64), q)) / 1e6


@dataclass(frozen=True)
class Spread:
    """Median, min and max of one quantity over repeats.

    >>> Spread.of([3.0, 1.0, 2.0]).text(1)
    '2.0 (1.0-3.0)'
    """

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of ``values`` (nan when there are none)."""
        data = [v for v in values if v == v]  # drop nan
        if not data:
            return cls(float("nan"), float("nan"), float("nan"))
        return cls(statistics.median(data), min(data), max(data))

    def text(self, digits: int = 0) -> str:
        """``median (min-max)``."""
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


@dataclass(frozen=True)
class CpuSample:
    """CPU use over one interval, in cores (1.0 = one core busy all the time)."""

    wall_s: float
    busy_cores: float
    ours_cores: float
    others_cores: float
    steal_cores: float
    per_process_cores: dict[str, float]


def _busy_s(times: Any) -> float:
    return float(
        times.user
        + times.nice
        + times.system
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


def _process_cpu_s(pid: int, with_children: bool) -> float:
    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        if with_children:
            for child in process.children(recursive=True):
                try:
                    total += sum(child.cpu_times()[:2])
                except psutil.Error:
                    pass
        return float(total)
    except psutil.Error:
        return 0.0


class CpuMeter:
    """Splits the machine's busy CPU into ours (named PIDs) and everyone else's.

    Args:
        pids: Name -> PID of the benchmark's processes; ``postgres`` counts its
            children (backends) too.

    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float, dict[str, float]]:
        times = psutil.cpu_times()
        per = {n: _process_cpu_s(p, with_children=(n == "postgres")) for n, p in self.pids.items()}
        return time.monotonic(), _busy_s(times), float(getattr(times, "steal", 0.0)), per

    def restart(self) -> None:
        """Start a new interval now."""
        self._start = self._snapshot()

    def sample(self) -> CpuSample:
        """CPU use since the last ``restart`` (or construction)."""
        t0, busy0, steal0, per0 = self._start
        t1, busy1, steal1, per1 = self._snapshot()
        wall = max(t1 - t0, 1e-9)
        per = {n: max(0.0, per1[n] - per0.get(n, 0.0)) / wall for n in per1}
        busy = (busy1 - busy0) / wall
        ours = sum(per.values())
        return CpuSample(
            wall_s=wall,
            busy_cores=busy,
            ours_cores=ours,
            others_cores=max(0.0, busy - ours),
            steal_cores=(steal1 - steal0) / wall,
            per_process_cores=per,
        )


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What BENCHMARKS.md reports about the machine and the run."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
        "git_commit": commit,
    }


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_counters(url: str, timeout_s: float = 2.0) -> Samples:
    """Every sample of a Prometheus /metrics page: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def counter_sum(
    samples: Samples,
    name: str,
    **labels: str,
) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
            total += value
    return total


def write_results(path: Path, results: Mapping[str, Any]) -> None:
    """Write a run's results as indented JSON (values JSON cannot hold as their text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
