"""What the gRPC services' composition roots share: limits, health, reflection, ``/metrics``.

The registry and the gateway each build their own ``grpc.aio`` server (their
interceptors and concurrency limits differ); both also offer ``grpc.health.v1``
and server reflection, bind one insecure port, report the health of the whole
server ("") and of their own service together, and serve Prometheus metrics
on a port of their own (:class:`MetricsEndpoint`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from headwater.shared.lifecycle import bounded_step


def message_size_options(max_bytes: int) -> list[tuple[str, int]]:
    """The server options that let a message of up to ``max_bytes`` through, either way.

    >>> message_size_options(1024)
    [('grpc.max_receive_message_length', 1024), ('grpc.max_send_message_length', 1024)]
    """
    return [
        ("grpc.max_receive_message_length", max_bytes),
        ("grpc.max_send_message_length", max_bytes),
    ]


async def start_with_health(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_name: str,
    host: str,
    port: int,
) -> int:
    """Add health and reflection to ``server``, bind ``host:port`` and start it.

    Args:
        server: The server, with its own servicers added.
        health_servicer: Answers ``grpc.health.v1`` (see :func:`set_serving_status`).
        service_name: The full name of the server's own service, listed by reflection.
        host: Interface to bind.
        port: Port to bind; 0 lets the OS choose.

    Returns:
        The bound port.

    """
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return bound


async def set_serving_status(
    health_servicer: health.aio.HealthServicer,
    service_name: str,
    status: health_pb2.HealthCheckResponse.ServingStatus,
) -> None:
    """Report ``status`` for the whole server ("") and for ``service_name``."""
    for name in ("", service_name):
        await health_servicer.set(name, status)


class MetricsEndpoint:
    """The Prometheus ``/metrics`` HTTP endpoint of a gRPC service (served from its own thread)."""

    def __init__(self) -> None:
        self._server: Any = None

    def start(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port``; nothing when ``port`` is 0."""
        if port:
            self._server, _ = start_http_server(port, host)

    async def stop(self, timeout_s: float) -> None:
        """Shut the endpoint down within ``timeout_s`` (logged if cut short); idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await bounded_step(asyncio.to_thread(server.shutdown), timeout_s, "metrics")
            server.server_close()
