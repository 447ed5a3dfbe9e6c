"""``headwater demo``: the learning loop, end to end, on the embedded stack.

The demo is a client of the running services, like any user: it registers a
binary classifier, deploys version 1 in live mode, streams River's SEA
generator (with a concept drift halfway) through the gateway over gRPC, sends
each label to ``feedback`` after a delay, starts canary rollouts (of a
version that never learns, then of each checkpoint the trainer registers of
the primary's learner) and lets the monitor promote or roll them back from
the joined labels (``demo_rollouts``), and reads rolling accuracy per version
from the monitor.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from river import datasets

from headwater.cli.clients import FeedbackSender, InferenceClient, InferenceResult
from headwater.cli.demo_rollouts import CanaryPilot, CanaryPlan
from headwater.cli.localstack.stack import Endpoints
from headwater.cli.output import console, print_table
from headwater.shared.pb import registry_pb2
from headwater.shared.registry_client import RegistryClient, lineage
from headwater.shared.settings import KafkaSettings

SPEC = (
    '{"pipeline": [{"component": "preprocessing.StandardScaler"},'
    ' {"component": "linear_model.LogisticRegression",'
    ' "params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.05}}}}]}'
)
#: Learning rates of 0: it answers False for every row whatever the labels say.
NEVER_LEARNS_SPEC = (
    '{"component": "linear_model.LogisticRegression", "params": {"intercept_lr": 0.0,'
    ' "optimizer": {"component": "optim.SGD", "params": {"lr": 0.0}}}}'
)
FEATURES = (("x0", "float"), ("x1", "float"), ("x2", "float"))


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo streams and how fast.

    Attributes:
        examples: Rows streamed; then the stream goes on while a canary is
            being decided, for at most ``overtime_s``.
        canaries: A canary of a version that never learns once ``loser_after``
            rows were served (the live model has learned by then, so the labels
            roll it back), then one of each new checkpoint of the primary.
        canary: The canaries' policy.

    """

    examples: int = 4000
    rows_per_request: int = 10
    requests_per_s: float = 12.0
    label_delay_s: float = 1.0
    seed: int = 42
    poll_interval_s: float = 1.0
    overtime_s: float = 15.0
    canaries: bool = True
    loser_after: int = 500
    canary: CanaryPlan = field(default_factory=CanaryPlan)


@dataclass
class DemoProgress:
    """What the demo has seen so far."""

    sent: int = 0
    labels_sent: int = 0
    served_versions: dict[int, int] = field(default_factory=dict)
    newest_live_sequence: int = 0
    rollouts: dict[int, str] = field(default_factory=dict)
    monitor: dict[int, dict[str, Any]] = field(default_factory=dict)


def sea_stream(plan: DemoPlan) -> Iterator[tuple[dict[str, float], bool]]:
    """SEA with a concept drift halfway (variant 0 → variant 3, over ~100 rows), unbounded."""
    stream = datasets.synth.ConceptDriftStream(
        stream=datasets.synth.SEA(variant=0, seed=plan.seed),
        drift_stream=datasets.synth.SEA(variant=3, seed=plan.seed + 1),
        position=plan.examples // 2, width=100, seed=plan.seed,
    )
    for x, y in stream:
        yield {f"x{i}": float(v) for i, v in x.items()}, bool(y)


async def register(registry: RegistryClient, name: str) -> registry_pb2.Model:
    """Create the demo model, its version 1 from the spec, and deploy it live."""
    await registry.create_model(name, "binary", FEATURES, "SEA concept-drift demo",
                                {"demo": "true"})
    await registry.create_version(name, SPEC, lineage(seed=7), description="initial spec")
    await registry.deploy(name, 1, mode="live")
    return await registry.get_model(name)


async def wait_until_served(inference: InferenceClient, model: registry_pb2.Model) -> None:
    """Poll the gateway until it answers for the new model (bounded)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await inference.infer(model, [{"x0": 0.0, "x1": 0.0, "x2": 0.0}])
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


class Demo:
    """Drives one run of the demo against running services."""

    def __init__(self, endpoints: Endpoints, plan: DemoPlan, model_name: str) -> None:
        self.endpoints = endpoints
        self.plan = plan
        self.name = model_name
        self.progress = DemoProgress()
        self._loser_tried = False

    async def run(self) -> DemoProgress:
        """Register, stream, let the monitor judge the canaries, watch; return what was seen."""
        kafka = KafkaSettings(bootstrap=self.endpoints.kafka_bootstrap)
        async with (RegistryClient(self.endpoints.registry, actor="demo") as registry,
                    InferenceClient(self.endpoints.gateway) as inference,
                    FeedbackSender(kafka) as feedback):
            model = await register(registry, self.name)
            await wait_until_served(inference, model)
            pilot = CanaryPilot(registry, self.name, self.plan.canary, console.print)
            pilot.accepting = self.plan.canaries
            with _progress_bar() as bar:
                task = bar.add_task("streaming", total=self.plan.examples, status="")
                watcher = asyncio.create_task(self._watch(pilot, bar, task))
                try:
                    await self._stream(model, inference, feedback, pilot, bar, task)
                    await asyncio.sleep(self.plan.label_delay_s + 3 * self.plan.poll_interval_s)
                finally:
                    watcher.cancel()
                await self._poll(pilot)
                await pilot.abort("the demo's traffic stopped before the canary was decided")
        self.progress.rollouts = dict(pilot.outcomes)
        return self.progress

    async def _stream(self, model: registry_pb2.Model, inference: InferenceClient,
                      feedback: FeedbackSender, pilot: CanaryPilot, bar: Progress,
                      task: Any) -> None:
        """Plan.examples rows, then on while a canary is in flight (at most overtime_s)."""
        loop = asyncio.get_running_loop()
        rows = sea_stream(self.plan)
        period_s, overtime_ends = 1.0 / self.plan.requests_per_s, math.inf
        while loop.time() < overtime_ends:
            started = loop.time()
            await self._request(model, inference, feedback, [next(rows) for _ in range(
                self.plan.rows_per_request)])
            if self.progress.sent >= self.plan.examples:
                pilot.accepting = False  # the stream is over: no new canary
                if not pilot.busy:
                    return
                overtime_ends = min(overtime_ends, started + self.plan.overtime_s)
                bar.update(task, total=self.progress.sent)
            bar.update(task, completed=self.progress.sent, status=self._status(pilot))
            await asyncio.sleep(max(0.0, period_s - (loop.time() - started)))

    async def _request(self, model: registry_pb2.Model, inference: InferenceClient,
                       feedback: FeedbackSender, batch: list[tuple[dict[str, float], bool]],
                       ) -> None:
        """One request through the gateway; each row's label to feedback after the delay."""
        loop = asyncio.get_running_loop()
        results = await inference.infer(model, [x for x, _ in batch])
        for result, (_, label) in zip(results, batch, strict=True):
            self._record(result)
            loop.call_later(self.plan.label_delay_s, self._send_label, feedback,
                            result.prediction_id, label)

    def _record(self, result: InferenceResult) -> None:
        seen = self.progress
        seen.sent += 1
        seen.served_versions[result.version] = seen.served_versions.get(result.version, 0) + 1
        seen.newest_live_sequence = max(seen.newest_live_sequence, result.live_sequence)

    def _send_label(self, feedback: FeedbackSender, prediction_id: str, label: bool) -> None:
        feedback.send_later(prediction_id, label)
        self.progress.labels_sent += 1

    async def _watch(self, pilot: CanaryPilot, bar: Progress, task: Any) -> None:
        while True:
            await asyncio.sleep(self.plan.poll_interval_s)
            try:
                await self._poll(pilot)
            except Exception as error:  # keep streaming if a poll fails
                console.log(f"poll failed: {error}")
            bar.update(task, status=self._status(pilot))

    async def _poll(self, pilot: CanaryPilot) -> None:
        """Read the monitor's numbers; follow the canaries (and start the next one)."""
        self.progress.monitor = await _monitor_versions(self.endpoints, self.name)
        due = self.progress.sent >= self.plan.loser_after
        if due and pilot.accepting and not self._loser_tried:
            self._loser_tried = True
            await _try_a_loser(pilot, self.name)
        await pilot.poll()

    def _status(self, pilot: CanaryPilot) -> str:
        parts = [f"v{v} {m['rolling_accuracy']:.3f}"
                 for v, m in sorted(self.progress.monitor.items())
                 if m.get("rolling_accuracy") is not None]
        return " · ".join([pilot.status() or f"live #{self.progress.newest_live_sequence}",
                           *parts[-2:]])


async def _try_a_loser(pilot: CanaryPilot, name: str) -> None:
    """A canary of a version that never learns: the monitor should roll it back in seconds."""
    version = await pilot.registry.create_version(
        name, NEVER_LEARNS_SPEC, lineage(seed=7), description="learning rates of 0")
    await pilot.start(version.version, "a version that never learns: the labels should reject it")


async def _monitor_versions(endpoints: Endpoints, name: str) -> dict[int, dict[str, Any]]:
    url = f"{endpoints.monitor_http}/v1/models/{name}"
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
        if reply.status == 404:
            return {}
        reply.raise_for_status()
        body = await reply.json()
    return {int(v["version"]): v for v in body["versions"]}


def _progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                    console=console)


async def print_summary(endpoints: Endpoints, name: str, seen: DemoProgress) -> None:
    """A table per version: lineage from the registry, quality from the monitor, its canary."""
    async with RegistryClient(endpoints.registry) as registry:
        versions = await registry.list_versions(name)
    rows = []
    for version in versions:
        numbers = seen.monitor.get(version.version, {})
        accuracy = numbers.get("rolling_accuracy")
        rows.append((
            f"v{version.version}",
            f"v{version.lineage.parent_version}" if version.lineage.parent_version else "spec",
            version.lineage.example_count,
            numbers.get("requests", 0),
            numbers.get("labelled", 0),
            "-" if accuracy is None else f"{accuracy:.3f}",
            seen.rollouts.get(version.version, "-").replace("_", " "),
        ))
    print_table(f"demo summary — model {name}",
                ("version", "from", "learned", "requests", "labelled", "accuracy", "canary"), rows)
    decided = ", ".join(f"v{v} {state.replace('_', ' ')}"
                        for v, state in sorted(seen.rollouts.items())) or "none"
    console.print(
        f"{seen.sent} predictions, {seen.labels_sent} labels, newest live update "
        f"#{seen.newest_live_sequence}; canaries judged by the monitor: {decided}")
