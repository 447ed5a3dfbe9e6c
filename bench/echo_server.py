"""The bare-gRPC ceiling: a grpc.aio OIP server answering one pre-built ModelInferResponse.

``python -m bench.echo_server --port P --response FILE`` serves
``inference.GRPCInferenceService/ModelInfer`` (and ``grpc.health.v1``) and
answers every request with the serialized response in FILE, without looking at
the request. It is what the gateway would cost if predicting, validating,
routing and publishing were free: the same Python grpc.aio stack, the same
messages on the wire, in a process of its own, as the gateway runs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from headwater.shared.pb import oip_pb2, oip_pb2_grpc


class EchoServicer(oip_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers ModelInfer with one fixed response."""

    def __init__(self, response: oip_pb2.ModelInferResponse) -> None:
        self.response = response

    async def ModelInfer(
        self, request: oip_pb2.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> oip_pb2.ModelInferResponse:
        return self.response


async def serve(port: int, response: oip_pb2.ModelInferResponse) -> None:
    server = grpc.aio.server(maximum_concurrent_rpcs=1024)
    oip_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(response), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, required=True)
    args = parser.parse_args()
    response = oip_pb2.ModelInferResponse.FromString(args.response.read_bytes())
    asyncio.run(serve(args.port, response))


if __name__ == "__main__":
    main()
