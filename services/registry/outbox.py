"""The outbox relay: committed registry events, published in commit order.

One relay is active per database (a session advisory lock elects it; other
replicas stand by). The active relay reads unpublished outbox rows in
sequence order, publishes each to ``registry-events`` with
``send_and_wait`` and marks it published before taking the next one.
Delivery is at least once, not exactly once, even when nothing crashes: a
``send_and_wait`` that timed out may still have been written by the broker,
and the retry writes it again (so does a process that dies between the ack
and the mark). Consumers de-duplicate: every event carries its outbox
``sequence`` (grows by one per commit, in commit order) and a unique
``event_id``; skip an event whose ``sequence`` is not above the last one
applied. While the broker is unreachable the relay retries the same row with
capped exponential backoff: order is never broken and nothing is skipped.
It wakes as soon as a change commits — through :meth:`OutboxRelay.wake` in
this process and PostgreSQL ``LISTEN``/``NOTIFY`` for changes committed by
other replicas — and polls every ``outbox_poll_interval_ms`` in case a
notification was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from typing import Any, Protocol

import asyncpg

from headwater.services.registry import metrics
from headwater.services.registry import repository as repo
from headwater.services.registry.settings import RegistrySettings
from headwater.shared.bus.topics import Topic
from headwater.shared.pb import events_pb2
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

RETENTION_SWEEP_INTERVAL_S = 60.0
STANDBY_POLL_S = 1.0
INITIAL_BACKOFF_S = 0.05


class Publisher(Protocol):
    """What the relay needs of :class:`headwater.shared.bus.producer.EventProducer`."""

    async def send_and_wait(
        self,
        topic: Topic,
        key: str,
        message: Any,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Publish one record and wait for the broker's acknowledgement."""


class OutboxRelay:
    """Publishes outbox rows to the registry-events topic, in order.

    Args:
        dsn: PostgreSQL DSN; the relay holds one connection of its own (for
            the leader lock and LISTEN).
        producer: A started producer.
        settings: Poll interval, batch size, backoff cap, retention.

    """

    def __init__(self, dsn: str, producer: Publisher, settings: RegistrySettings) -> None:
        self._dsn = dsn
        self._producer = producer
        self._settings = settings
        self._wake = asyncio.Event()
        self._last_sweep = 0.0
        self._backoff = Backoff(
            initial_s=INITIAL_BACKOFF_S, max_s=settings.outbox_retry_max_backoff_ms / 1000
        )

    def wake(self) -> None:
        """Make the relay look at the outbox now (call after a commit)."""
        self._wake.set()

    async def run(self) -> None:
        """Relay until cancelled, reconnecting to PostgreSQL after any failure."""
        failures = 0
        while True:
            try:
                await self._run_connected()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox relay failed; reconnecting", exc_info=True)
                metrics.OUTBOX_LEADER.set(0)
                await asyncio.sleep(self._backoff.delay_s(failures))
                failures += 1

    async def _run_connected(self) -> None:
        db = self._settings.database
        conn = await asyncpg.connect(
            self._dsn, timeout=db.command_timeout_s, command_timeout=db.command_timeout_s
        )
        try:
            await repo.init_connection(conn)
            # Standby: another replica relays; poll its session lock (no event to wait on).
            while not await repo.try_relay_lock(conn):  # noqa: ASYNC110
                await asyncio.sleep(STANDBY_POLL_S)
            metrics.OUTBOX_LEADER.set(1)
            log.info("outbox relay active")
            await conn.add_listener(repo.OUTBOX_CHANNEL, self._on_notify)
            await self._relay(conn)
        finally:
            metrics.OUTBOX_LEADER.set(0)
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _relay(self, conn: asyncpg.Connection) -> None:
        poll_s = self._settings.outbox_poll_interval_ms / 1000
        while True:
            self._wake.clear()
            rows = await repo.fetch_unpublished(conn, self._settings.outbox_batch_size)
            for row in rows:
                await self._publish(row)
                await repo.mark_published(conn, row["sequence"])
                metrics.OUTBOX_LAST_SEQUENCE.set(row["sequence"])
            if rows:
                continue
            await self._sweep(conn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)

    async def _publish(self, row: repo.Row) -> None:
        """Publish one row, retrying with capped backoff until the broker takes it."""
        event = events_pb2.RegistryEvent.FromString(row["event"])
        headers = [(name, value.encode("ascii")) for name, value in row["headers"]]
        attempt = 0
        while True:
            try:
                await self._producer.send_and_wait(
                    Topic.REGISTRY_EVENTS, row["key"], event, headers
                )
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                metrics.OUTBOX_FAILURES.inc()
                wait_s = self._backoff.delay_s(attempt)
                log.warning(
                    "publishing a registry event failed; retrying",
                    extra={"sequence": row["sequence"], "error": repr(error), "retry_s": wait_s},
                )
                await asyncio.sleep(wait_s)
                attempt += 1
        metrics.OUTBOX_PUBLISHED.inc()
        delay = dt.datetime.now(dt.UTC) - row["created_at"]
        metrics.OUTBOX_DELAY_SECONDS.observe(max(delay.total_seconds(), 0.0))

    async def _sweep(self, conn: asyncpg.Connection) -> None:
        """Delete published rows past their retention, at most once a minute."""
        now = time.monotonic()
        if now - self._last_sweep < RETENTION_SWEEP_INTERVAL_S:
            return
        self._last_sweep = now
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self._settings.outbox_retention_s)
        deleted = await repo.delete_published_before(conn, cutoff)
        if deleted:
            log.info("outbox rows deleted", extra={"rows": deleted})
