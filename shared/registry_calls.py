"""How the registry client calls: one channel, a deadline on every call, bounded read retries.

:class:`RegistryCalls` is the base of :class:`~headwater.shared.registry_client.RegistryClient`
(through :class:`~headwater.shared.rollout_calls.RolloutCalls`): it owns the channel and
the two ways of calling. Reads are retried, a bounded number of times and within the
same deadline, when the registry is UNAVAILABLE; writes are never retried (a write
whose answer was lost may have committed). Status codes come back as headwater's own
errors (:func:`~headwater.shared.grpc_errors.error_for`).

>>> enum_value("task", "binary", {"binary": 1})
1
>>> enum_value("task", "binry", {"binary": 1})
Traceback (most recent call last):
...
headwater.shared.errors.InvalidInput: unknown task 'binry': one of binary
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc

from headwater.shared import errors
from headwater.shared.grpc_errors import error_for
from headwater.shared.pb import registry_pb2_grpc
from headwater.shared.retry import Backoff

ACTOR_METADATA_KEY = "x-headwater-actor"
DEFAULT_MAX_MESSAGE_BYTES = 80 * 1024 * 1024
READ_ATTEMPTS = 4
#: Between two attempts at a read; uncapped: the deadline bounds it.
READ_BACKOFF = Backoff(initial_s=0.1, jitter=0.5)

R = TypeVar("R")


def enum_value(kind: str, value: str | int, names: Mapping[str, Any]) -> Any:
    """The enum value of ``value``: itself when an int, else looked up by name.

    Raises:
        InvalidInput: an unknown name (the message lists the known ones).

    """
    if isinstance(value, int):
        return value
    try:
        return names[value]
    except KeyError:
        raise errors.InvalidInput(f"unknown {kind} {value!r}: one of {', '.join(names)}") from None


class RegistryCalls:
    """The channel to ``headwater.registry.v1.Registry`` and the way every call is made.

    Args:
        target: ``host:port`` of the registry.
        deadline_s: Deadline of every call, retries included.
        actor: Who the caller is, recorded in the audit log (metadata
            ``x-headwater-actor``); empty leaves it to the server (``anonymous``).
        max_message_bytes: Largest message sent or received (artifacts are big).

    Use as an async context manager, or call :meth:`close` when done.

    """

    def __init__(
        self,
        target: str,
        deadline_s: float = 5.0,
        *,
        actor: str = "",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if deadline_s <= 0:
            raise ValueError("deadline_s must be positive")
        self.target = target
        self.deadline_s = deadline_s
        self._metadata = ((ACTOR_METADATA_KEY, actor),) if actor else ()
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        self._stub = registry_pb2_grpc.RegistryStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def _write(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        try:
            return await method(request, timeout=self.deadline_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise error_for(error.code(), error.details() or "") from error

    async def _read(self, method: Callable[..., Awaitable[R]], request: Any) -> R:
        deadline = time.monotonic() + self.deadline_s
        for attempt in range(READ_ATTEMPTS):
            remaining = deadline - time.monotonic()
            try:
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                backoff = READ_BACKOFF.delay_s(attempt)
                last = attempt == READ_ATTEMPTS - 1
                if (
                    error.code() is not grpc.StatusCode.UNAVAILABLE
                    or last
                    or (deadline - time.monotonic() <= backoff)
                ):
                    raise error_for(error.code(), error.details() or "") from error
                await asyncio.sleep(backoff)
        raise AssertionError("unreachable")
