"""One lazily (re)connected aiokafka producer client, shared by concurrent senders."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from headwater.shared.bus.topics import ensure_topics
from headwater.shared.errors import FailedPrecondition, Unavailable
from headwater.shared.settings import KafkaSettings

log = logging.getLogger(__name__)


class ProducerConnection:
    """Creates the aiokafka client on first use, once, however many tasks ask at once.

    Args:
        kafka: Broker address, linger and request timeout.
        client_id: Names the client on the broker.
        max_request_size: Largest request the client sends, in bytes.
        create_topics: Create the headwater topics right after connecting
            (idempotent, best effort). Tansu auto-creates a topic, with its own
            default partition count, the first time a client asks for its
            metadata; creating them first keeps the configured count even when
            this producer is the first client a fresh broker sees.

    """

    def __init__(
        self,
        kafka: KafkaSettings,
        client_id: str,
        *,
        max_request_size: int = 1_048_576,
        create_topics: bool = True,
    ) -> None:
        self.kafka = kafka
        self.client_id = client_id
        self._max_request_size = max_request_size
        self._create_topics = create_topics
        self._client: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> AIOKafkaProducer:
        """The connected client, connecting first if needed (bounded by the request timeout).

        Raises:
            Unavailable: The broker could not be reached in time.

        """
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._connect()
            return self._client

    async def _connect(self) -> AIOKafkaProducer:
        client = AIOKafkaProducer(
            bootstrap_servers=self.kafka.bootstrap,
            client_id=self.client_id,
            acks="all",
            # Tansu does not implement InitProducerId: the idempotent producer fails to start.
            enable_idempotence=False,
            linger_ms=self.kafka.producer_linger_ms,
            request_timeout_ms=self.kafka.request_timeout_ms,
            max_request_size=self._max_request_size,
            retry_backoff_ms=100,
        )
        timeout_s = self.kafka.request_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                await client.start()
            if self._create_topics:
                await self._ensure_topics(timeout_s)
        except (KafkaError, OSError, TimeoutError) as err:
            await _stop_quietly(client, timeout_s=1.0)
            raise Unavailable(f"cannot connect to {self.kafka.bootstrap}: {err!r}") from err
        except BaseException:
            await _stop_quietly(client, timeout_s=1.0)
            raise
        return client

    async def _ensure_topics(self, timeout_s: float) -> None:
        try:
            await ensure_topics(self.kafka, timeout_s=timeout_s)
        except (Unavailable, FailedPrecondition) as err:
            log.warning("could not ensure topics; sending anyway", extra={"error": str(err)})

    async def close(self, timeout_s: float) -> None:
        """Close the client (flushing what it holds) within ``timeout_s``; next use reconnects."""
        client, self._client = self._client, None
        if client is not None:
            await _stop_quietly(client, timeout_s)


async def _stop_quietly(client: AIOKafkaProducer, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            await client.stop()
    except (KafkaError, OSError, TimeoutError) as err:
        log.debug("producer close failed", extra={"error": repr(err)})
