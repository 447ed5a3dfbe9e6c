"""The whole loop with stock clients: tritonclient.grpc asks, a plain aiokafka
producer sends the label as JSON, the live model the gateway serves learns it
exactly once, and the next checkpoint version counts it in its lineage."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from headwater.shared.registry_client import RegistryClient, lineage
from tests.e2e.conftest import RunningStack

SPEC = '{"component": "linear_model.LogisticRegression", ' \
       '"params": {"optimizer": {"component": "optim.SGD", "params": {"lr": 0.5}}}}'
TRITON_SESSION = Path(__file__).with_name("triton_session.py")


async def _send_json_feedback(bootstrap: str, prediction_id: str, copies: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        body = json.dumps({"predictionId": prediction_id, "label": {"boolLabel": True}})
        for _ in range(copies):  # a producer retry: the same label delivered twice
            await producer.send_and_wait(
                "headwater.feedback", body.encode(), key=prediction_id.encode(),
                headers=[("content-type", b"application/json")])
    finally:
        await producer.stop()


async def _deploy_fresh_model(stack: RunningStack, name: str) -> None:
    async with RegistryClient(stack.endpoints["registry"]) as registry:
        await registry.create_model(name, "binary", [("x0", "float"), ("x1", "float")])
        await registry.create_version(name, SPEC, lineage(seed=1))
        await registry.deploy(name, 1, mode="live")


async def _checkpoint(stack: RunningStack, model: str) -> dict:
    url = f"{stack.endpoints['trainer_http']}/v1/models/{model}/checkpoint"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        deadline = time.monotonic() + 30
        while True:
            async with session.post(url) as reply:
                if reply.status == 201:
                    return await reply.json()
                assert time.monotonic() < deadline, await reply.text()
            await asyncio.sleep(0.5)


@pytest.mark.timeout(180)
async def test_a_label_is_learned_once_served_live_and_counted_in_lineage(
    running_stack: RunningStack,
) -> None:
    model = f"loop-{uuid.uuid4().hex[:8]}"
    await _deploy_fresh_model(running_stack, model)
    client = await asyncio.create_subprocess_exec(
        sys.executable, str(TRITON_SESSION), running_stack.endpoints["gateway"], model, "60",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        assert client.stdin and client.stdout
        before = json.loads(await asyncio.wait_for(client.stdout.readline(), 90))
        await _send_json_feedback(running_stack.env["HEADWATER_KAFKA_BOOTSTRAP"],
                                  before["prediction_id"], copies=2)
        client.stdin.write(b"sent\n")
        await client.stdin.drain()
        after = json.loads(await asyncio.wait_for(client.stdout.readline(), 90))
        assert await asyncio.wait_for(client.wait(), 10) == 0
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
    assert after["live_sequence"] > before["live_sequence"]
    assert after["p_true"] > before["p_true"], "a True label should raise P(True) for the row"

    checkpoint = await _checkpoint(running_stack, model)
    assert checkpoint["parent_version"] == 1
    assert checkpoint["example_count"] == 1, "the duplicated label must be learned once"
    assert [(o["first"], o["last"]) for o in checkpoint["offsets"]] == [
        (checkpoint["offsets"][0]["first"],) * 2]
    async with RegistryClient(running_stack.endpoints["registry"]) as registry:
        version = await registry.get_version(model, checkpoint["version"])
    assert version.lineage.example_count == 1
    assert version.lineage.offsets[0].topic == "headwater.examples"
