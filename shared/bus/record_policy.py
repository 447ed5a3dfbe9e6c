"""The one per-record policy of every consumer: nothing about a record stops the consumer.

:meth:`RecordPolicy.handle` builds the :class:`ConsumedRecord` of what the
client read and runs the consumer's step on it:

- the step raises ``InvalidInput`` (it could not decode the value, or the
  event makes no sense): the record is dead-lettered with that reason;
- the step hits a bug (any other exception): it is logged with its traceback
  and the record dead-lettered as ``<consumer> failed: <ExceptionType>``;
- headers no client should send: dead-lettered without them, saying so;
- the step raises ``Unavailable`` (a broker or service it needs is down):
  the record is retried in place when the policy has a ``retry`` backoff,
  else ``Unavailable`` goes to the caller, which seeks back (or leaves the
  record unacknowledged). Either way the consumer never commits past it.

Dead letters go through
:func:`~headwater.shared.bus.dead_letter.dead_letter_reliably`: retried until
the broker acknowledges them, given up (``Unavailable``, do not commit) only
when the service stops. A record refused even as a truncated copy is logged
and counted in :attr:`RecordPolicy.failed`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable

from headwater.shared.bus.dead_letter import dead_letter_reliably
from headwater.shared.bus.producer import EventProducer
from headwater.shared.bus.records import ConsumedRecord, RawRecord
from headwater.shared.errors import InvalidInput, Unavailable
from headwater.shared.retry import Backoff

log = logging.getLogger(__name__)

#: A consumer's work on one record; what it returns is ignored.
Step = Callable[[ConsumedRecord], Awaitable[object]]


def _never() -> bool:
    return False


class RecordPolicy:
    """Handles records one at a time as the module docstring says.

    Args:
        producer: A started producer (writes the dead letters).
        consumer: Names the consumer in logs and in the reason of a record that hit a
            bug (``"gateway"`` gives ``gateway failed: KeyError``).
        stopping: True once the service stops: dead-lettering and in-place retries end
            with ``Unavailable``.
        on_reject: Called with each record about to be dead-lettered (to count it).
        retry: Delays between in-place attempts at a record whose step raised
            ``Unavailable``; None raises it to the caller at once.

    Attributes:
        rejected: Records handed to dead-letter.
        failed: Records that could not be dead-lettered (logged).

    """

    def __init__(
        self,
        producer: EventProducer,
        consumer: str,
        *,
        stopping: Callable[[], bool] = _never,
        on_reject: Callable[[ConsumedRecord], None] | None = None,
        retry: Backoff | None = None,
    ) -> None:
        self.producer = producer
        self.consumer = consumer
        self.stopping = stopping
        self.rejected = 0
        self.failed = 0
        self._on_reject = on_reject
        self._retry = retry

    async def handle(self, raw: RawRecord, step: Step) -> None:
        """Run ``step`` on the record of ``raw``; dead-letter it when it cannot be used.

        Raises:
            Unavailable: The step, or the dead-letter write, could not reach what it
                needs (and no in-place retry is left): do not commit past this record.

        """
        try:
            record = ConsumedRecord.of(raw)
        except Exception as err:  # headers no client should send: keep the bytes, say why
            log.exception("unreadable record headers", extra={"topic": raw.topic})
            reason = f"unreadable record headers: {type(err).__name__}: {err}"
            await self.reject(ConsumedRecord.without_headers(raw), reason)
            return
        for attempt in itertools.count():
            try:
                await self._attempt(record, step)
                return
            except Unavailable as err:
                if self._retry is None or self.stopping():
                    raise
                await self._pause(self._retry.delay_s(attempt), err)

    async def _pause(self, delay_s: float, err: Unavailable) -> None:
        log.warning(
            "consumer paused",
            extra={"consumer": self.consumer, "error": str(err), "retry_in_s": delay_s},
        )
        await asyncio.sleep(delay_s)

    async def _attempt(self, record: ConsumedRecord, step: Step) -> None:
        try:
            await step(record)
        except InvalidInput as err:
            await self.reject(record, str(err))
        except Unavailable:
            raise
        except Exception as err:  # a bug must not stop the consumer: keep the bytes, say why
            log.exception(
                "record handling failed",
                extra={"consumer": self.consumer, "topic": record.topic, "offset": record.offset},
            )
            await self.reject(record, f"{self.consumer} failed: {type(err).__name__}")

    async def reject(self, record: ConsumedRecord, reason: str) -> None:
        """Dead-letter ``record`` with ``reason``, retrying until the broker acknowledges it.

        Raises:
            Unavailable: The service stopped first (do not commit past this record).

        """
        self.rejected += 1
        if self._on_reject is not None:
            self._on_reject(record)
        try:
            await dead_letter_reliably(
                self.producer,
                record.key,
                record.value,
                reason,
                record.topic,
                record.headers,
                stopping=self.stopping,
            )
        except Exception as error:
            self.failed += 1
            log.error(
                "could not dead-letter a record",
                extra={"topic": record.topic, "offset": record.offset, "error": repr(error)},
            )
            if isinstance(error, Unavailable):
                raise
