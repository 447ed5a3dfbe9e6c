"""Labelled traffic for the rollout tests: rows through the gateway, labels as a user sends them.

The stream is balanced and linearly separable (label: ``x0 + x1 > 0``), so a
logistic regression learns it within a few dozen labels while a version built
with learning rates of 0 answers ``False`` for every row (accuracy 0.5).
Labels go to ``feedback`` as JSON keyed by prediction id from a plain aiokafka
producer, as any user's system would send them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from headwater.cli.clients import InferenceClient, InferenceResult
from headwater.shared.bus.codec import decode_event
from headwater.shared.errors import HeadwaterError
from headwater.shared.pb import events_pb2, registry_pb2
from headwater.shared.registry_client import RegistryClient, lineage
from tests.e2e.conftest import RunningStack

T = TypeVar("T")
Row = dict[str, float]

LEARNER_SPEC = '{"component": "linear_model.LogisticRegression", ' \
               '"params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.5}}}}'
CONSTANT_SPEC = '{"component": "linear_model.LogisticRegression", "params": {"intercept_lr": 0.0,' \
                ' "optimizer": {"component": "optim.SGD", "params": {"lr": 0.0}}}}'
FEATURES = (("x0", "float"), ("x1", "float"))
FEEDBACK_TOPIC = "headwater.feedback"
ALERTS_TOPIC = "headwater.alerts"


def labelled_rows(rng: random.Random, count: int) -> list[tuple[Row, bool]]:
    """``count`` rows of the stream with their labels."""
    rows = [{"x0": rng.uniform(-1, 1), "x1": rng.uniform(-1, 1)} for _ in range(count)]
    return [(row, row["x0"] + row["x1"] > 0) for row in rows]


def key_bucket(key: str) -> float:
    """A routing key's bucket in [0, 1) as the design defines it (blake2b's first 8 bytes)."""
    return int.from_bytes(hashlib.blake2b(key.encode()).digest()[:8], "big") / 2**64


async def wait_for(probe: Callable[[], Awaitable[T | None]], timeout_s: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        await asyncio.sleep(0.3)


async def create_model(stack: RunningStack, name: str, *specs: str) -> registry_pb2.Model:
    """A binary model with one version per spec, version 1 deployed live."""
    async with RegistryClient(stack.endpoints["registry"], actor="e2e") as registry:
        await registry.create_model(name, "binary", FEATURES)
        for spec in specs:
            await registry.create_version(name, spec, lineage(seed=1))
        await registry.deploy(name, 1, mode="live")
        return await registry.get_model(name)


async def monitor_versions(stack: RunningStack, name: str) -> dict[int, dict[str, Any]]:
    """The monitor's numbers per version of ``name`` (empty before it has seen the model)."""
    url = f"{stack.endpoints['monitor_http']}/v1/models/{name}"
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
        if reply.status == 404:
            return {}
        assert reply.status == 200, await reply.text()
        body = await reply.json()
    return {int(v["version"]): v for v in body["versions"]}


async def rollout_alerts(stack: RunningStack, model: str, kinds: set[str],
                         timeout_s: float = 20) -> dict[str, events_pb2.Alert]:
    """The model's alerts of ``kinds`` on ``alerts``, read from the beginning, by kind."""
    bootstrap = stack.env["HEADWATER_KAFKA_BOOTSTRAP"]
    consumer = AIOKafkaConsumer(ALERTS_TOPIC, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, events_pb2.Alert] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while set(found) != kinds:
            assert time.monotonic() < deadline, f"alerts {kinds - set(found)} of {model} never came"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    alert = decode_event(events_pb2.Alert, record.value, record.headers)
                    if alert.model == model and alert.kind in kinds:
                        found[alert.kind] = alert
    finally:
        await consumer.stop()
    return found


class Traffic:
    """Requests to the gateway and the labels of their answers, counted per answering version.

    Args:
        stack: The running stack.
        model: The model asked (its schema builds the requests).
        seed: Seeds the stream.
        rows_per_request: Rows in each request.

    """

    def __init__(self, stack: RunningStack, model: registry_pb2.Model, seed: int,
                 rows_per_request: int = 5) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.rows_per_request = rows_per_request
        self.served: Counter[int] = Counter()
        self.inference = InferenceClient(stack.endpoints["gateway"])
        self._producer = AIOKafkaProducer(bootstrap_servers=stack.env["HEADWATER_KAFKA_BOOTSTRAP"],
                                          linger_ms=5)

    async def __aenter__(self) -> Traffic:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()
        await self.inference.__aexit__()

    async def wait_until_served(self, timeout_s: float = 30) -> None:
        """Until the gateway answers for the model (it learns of deployments from events)."""
        async def answered() -> bool:
            try:
                await self.inference.infer(self.model, [{"x0": 0.0, "x1": 0.0}])
            except HeadwaterError:
                return False
            return True
        await wait_for(answered, timeout_s, f"the gateway to serve {self.model.name}")

    async def ask(self, rows: Sequence[Row], routing_key: str = "") -> list[InferenceResult]:
        """One request of ``rows``; each row's answer."""
        return await self.inference.infer(self.model, rows, routing_key)

    async def label(self, results: Sequence[InferenceResult], labels: Sequence[bool]) -> None:
        """Each answer's label to ``feedback``: JSON keyed by its prediction id."""
        sent = []
        for result, label in zip(results, labels, strict=True):
            body = json.dumps({"predictionId": result.prediction_id, "label": {"boolLabel": label}})
            sent.append(await self._producer.send(
                FEEDBACK_TOPIC, body.encode(), key=result.prediction_id.encode(),
                headers=[("content-type", b"application/json")]))
        await asyncio.gather(*sent)

    async def labelled_request(self) -> list[InferenceResult]:
        """One request of fresh rows, then their labels."""
        batch = labelled_rows(self.rng, self.rows_per_request)
        results = await self.ask([row for row, _ in batch])
        self.served.update(result.version for result in results)
        await self.label(results, [label for _, label in batch])
        return results

    async def send(self, rows: int) -> None:
        """Labelled requests until ``rows`` rows were answered."""
        for _ in range(-(-rows // self.rows_per_request)):
            await self.labelled_request()

    async def until(self, done: Callable[[], Awaitable[T | None]], timeout_s: float,
                    what: str) -> T:
        """Labelled requests until ``done()`` (asked every half second) answers something."""
        deadline = time.monotonic() + timeout_s
        checked_at = 0.0
        while True:
            await self.labelled_request()
            await asyncio.sleep(0.02)  # about 40 requests a second: the trainer keeps up
            if time.monotonic() - checked_at >= 0.5:
                checked_at = time.monotonic()
                if found := await done():
                    return found
            assert time.monotonic() < deadline, (
                f"timed out after {timeout_s:g} s waiting for {what}; served {dict(self.served)}")
