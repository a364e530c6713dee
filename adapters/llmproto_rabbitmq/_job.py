"""One delivery of a job, as the consumer hands it out (a :class:`~llmproto_ref.Job`).

Theory of operation
-------------------
A job is current while it is unsettled and its message came on its consumer's current, open
channel (:meth:`~llmproto_rabbitmq._queue.AmqpConsumer.holds`). The first settle of a current
job claims it: its lease stops and the consumer acts (ack, reject, delay, dead-letter). Every
later settle, and every settle of a job whose channel is gone, is stale: it changes nothing,
raises nothing and is counted [TRN-019]. The lease is an event-loop timer that the consumer
starts when it hands the job out and restarts on ``extend_lease`` [AMQP-019].
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiormq.abc import DeliveredMessage

from llmproto_rabbitmq._mapping import dead_reason
from llmproto_ref import ErrorCode, TransportError

if TYPE_CHECKING:
    from llmproto_rabbitmq._queue import AmqpConsumer

__all__ = ("AmqpJob",)


class AmqpJob:
    """One delivery of a job (a :class:`~llmproto_ref.Job`)."""

    __slots__ = ("_consumer", "_message", "_settled", "delivery_count", "reason", "timer")

    def __init__(self, consumer: AmqpConsumer, message: DeliveredMessage, count: int) -> None:
        self._consumer = consumer
        self._message = message
        self._settled = False
        self.timer: asyncio.TimerHandle | None = None
        self.delivery_count = count
        headers = message.header.properties.headers
        self.reason = dead_reason(headers) if consumer.dead else None

    @property
    def body(self) -> bytes:
        """The envelope bytes."""
        return self._message.body

    def _claim(self) -> bool:
        """End this delivery's lease if it is still current; count a stale settle otherwise."""
        if self._settled or not self._consumer.holds(self._message):
            self._consumer.counters.stale_settles += 1
            return False
        self._settled = True
        self._consumer.release(self)
        return True

    async def ack(self) -> None:
        """The job is done: remove it (a counted no-op when this delivery is stale)."""
        if self._claim():
            await self._consumer.settle(self._message, requeue=None)

    async def nack(self, *, delay_ms: int = 0) -> None:
        """Deliver again after ``delay_ms``, or dead-letter it at ``max_deliveries``."""
        if delay_ms < 0:
            raise TransportError(ErrorCode.INVALID_PARAMS, f"negative delay_ms {delay_ms}")
        if self._claim():
            await self._consumer.fail(self._message, self.delivery_count, delay_ms)

    async def terminate(self, *, reason: str) -> None:
        """Dead-letter with ``terminated: <reason>`` (on a dead-letter queue: drop it)."""
        if self._claim():
            consumer = self._consumer
            if consumer.dead:
                await consumer.settle(self._message, requeue=None)
            else:
                await consumer.dead_letter(self._message, f"terminated: {reason}")

    async def extend_lease(self) -> None:
        """Restart the lease (a counted no-op when this delivery is stale)."""
        if self._settled or not self._consumer.holds(self._message):
            self._consumer.counters.stale_settles += 1
            return
        self._consumer.lease(self)

    def lapse(self) -> None:
        """The lease ran out: the job fails like a nack, from a task of the consumer."""
        self.timer = None
        if self._settled or not self._consumer.holds(self._message):
            return
        self._settled = True
        consumer = self._consumer
        consumer.release(self)
        consumer.counters.expired_leases += 1
        consumer.spawn(consumer.fail(self._message, self.delivery_count, 0))
