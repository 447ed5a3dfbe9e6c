"""How long a record takes to reach an idle aiokafka consumer on Tansu, by ``fetch_max_wait_ms``.

``python -m bench.fetch_latency_bench`` starts Tansu, creates one topic with
one partition and assigns it (no group) to one consumer per ``fetch_max_wait_ms``
value, all idle at the end of the topic. Each round sends one record (acks=all,
no linger) at a random moment and times, for every consumer at once, from just
before the send to ``getmany`` returning it. A Kafka broker answers a waiting
fetch as soon as data arrives, so the wait should not matter; this measures
whether it does on the embedded broker. It explains the freshness numbers: the
trainer's join runs on Faust, whose aiokafka driver fixes the consumer's
``fetch_max_wait_ms`` at 1500.
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

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.measure import machine_info, percentile_ms, write_results
from bench.stack import running_stack
from headwater.shared.bus.topics import Topic, ensure_topics
from headwater.shared.settings import KafkaSettings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waits-ms", type=int, nargs="+", default=[1500, 500, 100, 10])
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fetch_latency.json"))
    return parser.parse_args(argv)


async def receive(consumer: AIOKafkaConsumer, started: list[int]) -> int:
    """ns from the send (``started[0]``, set by the sender) until ``getmany`` returns data."""
    while True:
        batch = await consumer.getmany(timeout_ms=5_000)
        if batch:
            return time.perf_counter_ns() - started[0]


async def run(bootstrap: str, args: argparse.Namespace) -> dict[int, list[int]]:
    kafka = KafkaSettings(bootstrap=bootstrap, topic_prefix="fetch.", partitions=1)
    await ensure_topics(kafka, [Topic.FEEDBACK])
    tp = TopicPartition(kafka.topic(Topic.FEEDBACK.value), 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    consumers = {
        wait: AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, fetch_max_wait_ms=wait)
        for wait in args.waits_ms
    }
    samples: dict[int, list[int]] = {wait: [] for wait in args.waits_ms}
    rng = random.Random(3)
    await producer.start()
    try:
        for consumer in consumers.values():
            await consumer.start()
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
        for _ in range(args.rounds):
            started = [0]
            waiting = {
                wait: asyncio.create_task(receive(c, started)) for wait, c in consumers.items()
            }
            await asyncio.sleep(rng.uniform(0.2, 0.8))  # a random phase of every fetch
            started[0] = time.perf_counter_ns()
            await producer.send_and_wait(tp.topic, b"x")
            async with asyncio.timeout(10):
                for wait, task in waiting.items():
                    samples[wait].append(await task)
    finally:
        for consumer in consumers.values():
            await consumer.stop()
        await producer.stop()
    return samples


def markdown(samples: dict[int, list[int]]) -> str:
    lines = [
        "| consumer `fetch_max_wait_ms` | p50 ms | p95 ms | max ms |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for wait, values in samples.items():
        lines.append(
            f"| {wait} | {percentile_ms(values, 50):.0f} | {percentile_ms(values, 95):.0f} "
            f"| {max(values) / 1e6:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    with running_stack("fetch", postgres=False) as stack:
        samples = asyncio.run(run(stack.kafka.bootstrap, args))
    table = markdown(samples)
    out: dict[str, Any] = {
        "machine": {**info, "loadavg_at_end": os.getloadavg()},
        "settings": {"rounds": args.rounds, "waits_ms": args.waits_ms},
        "latencies_ms": {w: [round(v / 1e6, 2) for v in s] for w, s in samples.items()},
        "markdown": table,
    }
    write_results(args.out, out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
