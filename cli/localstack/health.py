"""Health checks of the stack's parts, used by ``up`` (to wait) and ``status``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from headwater.cli.localstack.stack import Endpoints

TIMEOUT_S = 1.0


async def grpc_serving(target: str) -> bool:
    """True when the gRPC server at ``target`` reports SERVING."""
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def http_ok(url: str) -> bool:
    """True when ``GET url`` answers 200."""
    try:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
            return reply.status == 200
    except (TimeoutError, aiohttp.ClientError):
        return False


async def tcp_open(address: str) -> bool:
    """True when something accepts TCP connections at ``host:port``."""
    host, port = address.rsplit(":", 1)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), TIMEOUT_S)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


async def postgres_up(url: str) -> bool:
    """True when PostgreSQL accepts a connection and answers a query."""
    try:
        connection = await asyncpg.connect(url, timeout=TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(await connection.fetchval("SELECT 1", timeout=TIMEOUT_S) == 1)
    finally:
        await connection.close()


async def check(part: str, endpoints: Endpoints) -> bool:
    """Health of one part of the stack by name."""
    match part:
        case "broker":
            return await tcp_open(endpoints.kafka_bootstrap)
        case "postgres":
            return await postgres_up(endpoints.database_url)
        case "registry":
            return await grpc_serving(endpoints.registry)
        case "gateway":
            return await grpc_serving(endpoints.gateway)
        case "trainer":
            return await http_ok(f"{endpoints.trainer_http}/health")
        case "monitor":
            return await http_ok(f"{endpoints.monitor_http}/health")
    raise ValueError(f"unknown part {part!r}")
