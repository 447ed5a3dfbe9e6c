"""Settings of the inference gateway (environment prefix ``HEADWATER_GATEWAY_``).

>>> settings = GatewaySettings()
>>> settings.port, settings.registry.target, settings.max_batch_rows
(8001, '127.0.0.1:50051', 1024)
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from headwater.shared.settings import RegistryClientSettings, ServiceSettings

_EVERY_INTERFACE = frozenset({"0.0.0.0", "::", ""})


def _default_gateway_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GatewaySettings(ServiceSettings):
    """How the gateway serves and its limits.

    The registry comes from ``HEADWATER_REGISTRY_TARGET``, the broker from
    ``HEADWATER_KAFKA_*``; the fields below are the gateway's own.
    """

    model_config = SettingsConfigDict(env_prefix="HEADWATER_GATEWAY_", frozen=True)

    port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="gRPC port (OIP v2, grpc.health.v1 and reflection); 0 picks a free one.",
    )
    metrics_port: int = Field(
        9101, ge=0, le=65535, description="Prometheus /metrics port; 0 disables the endpoint."
    )
    registry: RegistryClientSettings = Field(
        default_factory=RegistryClientSettings,
        description="Where the registry is (HEADWATER_REGISTRY_TARGET, _DEADLINE_S).",
    )
    gateway_id: str = Field(
        default_factory=_default_gateway_id,
        description="Names this replica in prediction events and consumer ids (hostname-pid).",
    )
    max_batch_rows: int = Field(1024, ge=1, description="Most rows one ModelInfer may carry.")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest gRPC message received or sent."
    )
    max_concurrent_rpcs: int = Field(
        1024, ge=1, description="RPCs served at once; more are refused with RESOURCE_EXHAUSTED."
    )
    startup_timeout_s: float = Field(
        60.0,
        gt=0,
        description="How long start() waits for the registry before serving NOT_SERVING "
        "while it keeps retrying in the background.",
    )
    live_catchup_timeout_s: float = Field(
        10.0,
        ge=0,
        description="How long start() reads model-updates already published before reporting "
        "SERVING.",
    )
    reload_retry_max_s: float = Field(
        30.0, gt=0, description="Cap of the backoff between retries of a failed model reload."
    )
    unload_grace_s: float = Field(
        30.0,
        ge=0,
        description="How long a version a deployment no longer routes stays loaded, so a "
        "rollback right after a switch is instant.",
    )
    heartbeat_s: float = Field(
        2.0,
        gt=0,
        description="Time between two heartbeats to the registry (loaded and ready versions; "
        "the answer says what a rolling rollout wants this replica to answer with).",
    )
    replica_id: str = Field(
        "",
        description="Names this replica in its heartbeats and in rollout status; empty: the "
        "gateway id (hostname-pid).",
    )
    advertised_address: str = Field(
        "",
        description="host:port this replica reports in its heartbeats; empty: the bound host "
        "and port (the hostname when bound to every interface).",
    )
    shadow_queue_max_requests: int = Field(
        1000,
        ge=1,
        description="Answered requests that may wait for their shadow predictions; when full, "
        "a mirror is dropped (counted), never an answer.",
    )

    @property
    def replica_name(self) -> str:
        """The replica id the heartbeats carry: ``replica_id``, else the gateway id."""
        return self.replica_id or self.gateway_id

    def address(self, port: int) -> str:
        """The address the heartbeats advertise, given the bound port.

        >>> GatewaySettings(host="10.0.0.5").address(8001)
        '10.0.0.5:8001'
        >>> GatewaySettings(advertised_address="gw-0.gateway:8001").address(41234)
        'gw-0.gateway:8001'
        """
        if self.advertised_address:
            return self.advertised_address
        host = socket.gethostname() if self.host in _EVERY_INTERFACE else self.host
        return f"{host}:{port}"
