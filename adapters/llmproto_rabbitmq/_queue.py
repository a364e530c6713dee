"""Work queues: quorum queues, consumers with client-side leases, dead letters and delays.

Theory of operation
-------------------
Each queue Q is a quorum queue ``llmp.wq:Q`` bound to the work exchange, with the dead-letter
exchange and a delivery limit as a broker-side backstop, and its dead-letter queue
``llmp.dlq:Q`` (:mod:`llmproto_rabbitmq._declare`). A :class:`AmqpConsumer` consumes on a
channel of its own. The broker pushes, but a worker takes a job only when a handler slot is
free [WQ-006], so the consumer asks for credit only when the worker asks for a job: it starts
as one AMQP consumer with prefetch 1 and adds another (``_grow``) when a reader waits while the
credit is below the demand, the jobs handed out and unsettled plus the readers waiting, up to
``prefetch`` [AMQP-018]. So it never holds more unsettled jobs than ``prefetch`` [TRN-014],
nor more than its worker has asked for; several readers waiting at once get a job ahead each.
The delivery count is the quorum queue's ``x-delivery-count`` plus the deliveries a job had
before the binding last republished it, plus one [AMQP-020].

The lease is the consumer's: it starts when the job is handed out and runs on the event
loop's timer; when it ends unsettled, the consumer returns the job with ``basic.reject``
(requeue), or dead-letters it at the limit, exactly as a nack would [TRN-015]. A worker
process that dies or hangs loses its connection (heartbeats), and the broker requeues its jobs.

Settling is by delivery: a job whose channel is not the consumer's current one (a reconnect
happened, the consumer closed) or that was settled already is *stale*; settling it changes
nothing and is counted [TRN-019], and the broker delivers the job again by itself.
``nack(delay_ms)`` republishes the job to a delay queue whose messages expire after the delay
and dead-letter back to the queue, then acknowledges the original [AMQP-021]; dead-lettering
by the consumer publishes to the dead-letter exchange with ``llmp-dead-reason`` and then
acknowledges [AMQP-022]. Both republish first and acknowledge second: a crash between the two
leaves a duplicate, never a loss.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from aiormq.abc import DeliveredMessage

from llmproto_rabbitmq._declare import (
    RPC_TIMEOUT_S,
    Dedup,
    declare_delay,
    declare_queue,
    delay_bucket,
)
from llmproto_rabbitmq._errors import translated
from llmproto_rabbitmq._job import AmqpJob
from llmproto_rabbitmq._link import Channel, Link, delivery_tag, redelivered, wake
from llmproto_rabbitmq._mapping import (
    dead_letter_message,
    dead_letter_queue,
    delay_message,
    delivery_count,
    is_fresh,
    work_queue,
)
from llmproto_rabbitmq._stats import Counters
from llmproto_ref import ErrorCode, Job, QueueOptions, TransportError

__all__ = ("AmqpConsumer",)

_log = logging.getLogger("llmproto_rabbitmq")


class AmqpConsumer:
    """A ``Consumer`` of one work queue, or of its dead-letter queue when ``dead``."""

    def __init__(
        self,
        link: Link,
        queue: str,
        options: QueueOptions,
        *,
        dead: bool,
        counters: Counters,
        dedup: Dedup,
        delivery_limit: int,
        owners: set[AmqpConsumer],
    ) -> None:
        self.link = link
        self._owners = owners
        self.delivery_limit = delivery_limit
        self.queue = queue
        self.options = options
        self.dead = dead
        self.counters = counters
        self._dedup = dedup
        self._source = dead_letter_queue(queue) if dead else work_queue(queue)
        self._items: deque[DeliveredMessage] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()  #: readers waiting for a job
        self._channel: Channel | None = None
        self._credits = 0  #: consumers (each with prefetch 1) on the channel
        self._closed = False
        self._error: TransportError | None = None
        self._leased: set[AmqpJob] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._restoring = asyncio.Lock()

    async def start(self) -> AmqpConsumer:
        """Consume; restored after every reconnect from now on."""
        await self._attach()
        self.link.register(self)
        self._owners.add(self)
        return self

    # -- taking jobs -----------------------------------------------------------------------

    def __aiter__(self) -> AmqpConsumer:
        return self

    async def __anext__(self) -> Job:
        while True:
            if self._items:
                message = self._items.popleft()
                if not self.holds(message):
                    continue  # its channel is gone: the broker delivers it again
                headers = message.header.properties.headers
                job = AmqpJob(self, message, delivery_count(headers))
                message_id = message.header.properties.message_id
                if not self.dead and message_id and is_fresh(headers, redelivered(message)):
                    self._dedup.taken(self.queue, message_id)
                self.lease(job)
                return job
            if self._error is not None:
                self._closed = True
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            if self._wants_credit():
                await self._grow()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self, *, everyone: bool = False) -> None:
        wake(self._waiters, everyone=everyone)

    async def _on_message(self, message: DeliveredMessage) -> None:
        if self._closed:
            return  # unacknowledged: requeued when the channel closes
        if not self.dead:
            properties = message.header.properties
            message_id = properties.message_id
            headers = properties.headers
            if (
                message_id
                and is_fresh(headers, redelivered(message))
                and self._dedup.taken_before(self.queue, message_id)
            ):
                self.counters.duplicates += 1  # a second enqueue of a job [AMQP-017]
                await self.settle(message, requeue=None)
                return
            if delivery_count(headers) > self.options.max_deliveries:
                await self.dead_letter(message, "max_deliveries")  # its workers died [AMQP-022]
                return
        self._items.append(message)
        self._wake()

    # -- leases and settling -------------------------------------------------------------

    def holds(self, message: DeliveredMessage) -> bool:
        """Whether ``message`` came on this consumer's current, open channel."""
        return (
            not self._closed and message.channel is self._channel and not message.channel.is_closed
        )

    def lease(self, job: AmqpJob) -> None:
        """Start or restart ``job``'s lease."""
        if job.timer is not None:
            job.timer.cancel()
        loop = asyncio.get_running_loop()
        job.timer = loop.call_later(self.options.lease_ms / 1000, job.lapse)
        self._leased.add(job)

    def release(self, job: AmqpJob) -> None:
        """``job`` is settled: stop its lease."""
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None
        self._leased.discard(job)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as a task owned by this consumer."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, message: DeliveredMessage, *, requeue: bool | None) -> None:
        """``basic.ack`` (``requeue`` None) or ``basic.reject``; a closed channel is stale."""
        channel = message.channel
        tag = delivery_tag(message)
        try:
            if requeue is None:
                await channel.basic_ack(tag, wait=False)
            else:
                await channel.basic_reject(tag, requeue=requeue, wait=False)
        except Exception as exc:  # noqa: BLE001 - the channel is gone: the broker redelivers
            self.counters.stale_settles += 1
            _log.debug("settling a job of %s on a closed channel: %r", self.queue, exc)

    async def fail(self, message: DeliveredMessage, count: int, delay_ms: int) -> None:
        """A failed delivery: dead-letter it at the limit, else deliver it again (later)."""
        if not self.dead and count >= self.options.max_deliveries:
            await self.dead_letter(message, "max_deliveries")
        elif delay_ms > 0:
            await self._delay(message, count, delay_bucket(delay_ms))
        else:
            await self.settle(message, requeue=True)

    async def dead_letter(self, message: DeliveredMessage, reason: str) -> None:
        """Publish to the dead-letter exchange with ``reason``, then acknowledge [AMQP-022]."""
        properties = message.header.properties
        letter = dead_letter_message(
            self.queue, message.body, message_id=properties.message_id or "", reason=reason
        )
        try:
            stored = await self.link.publish(letter, f"dead-lettering a job of {self.queue!r}")
        except TransportError as exc:
            _log.warning("could not dead-letter a job of %s: %s", self.queue, exc)
            await self.settle(message, requeue=True)
            return
        if not stored:
            await self.settle(message, requeue=True)  # the dead-letter queue is gone
            return
        self.counters.dead_lettered += 1
        await self.settle(message, requeue=None)

    async def _delay(self, message: DeliveredMessage, count: int, delay_ms: int) -> None:
        properties = message.header.properties
        parked = delay_message(
            self.queue,
            message.body,
            message_id=properties.message_id or "",
            delay_ms=delay_ms,
            deliveries=count,
            dead=self.dead,
        )
        try:
            await declare_delay(self.link, self.queue, delay_ms, self.dead)
            stored = await self.link.publish(parked, f"delaying a job of {self.queue!r}")
        except TransportError as exc:
            _log.warning("could not delay a job of %s: %s", self.queue, exc)
            stored = False
        await self.settle(message, requeue=None if stored else True)

    # -- closing and restoring -----------------------------------------------------------

    async def aclose(self) -> None:
        """Stop; unsettled jobs go back to the queue at once (the channel closes), even when
        the caller is cancelled meanwhile."""
        channel = self.detach()
        if channel is not None and not channel.is_closed:
            await asyncio.shield(asyncio.ensure_future(self._close_channel(channel)))

    async def _close_channel(self, channel: Channel) -> None:
        try:
            await asyncio.wait_for(channel.close(), RPC_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - closing fails only if it is closed
            _log.debug("closing the channel of %s failed: %r", self.queue, exc)

    def detach(self) -> Channel | None:
        """Stop taking and settling jobs at once; returns the channel left to close."""
        self._closed = True
        self.link.unregister(self)
        self._owners.discard(self)
        for job in [*self._leased]:
            self.release(job)
        for task in self._tasks:
            task.cancel()
        self._items.clear()
        self._wake(everyone=True)
        channel, self._channel = self._channel, None
        return channel

    def lost(self, error: TransportError) -> None:
        """End every iteration with ``error`` [TRN-023]."""
        if not self._closed:
            self._error = error
            self.link.unregister(self)
            self._wake(everyone=True)

    async def restore(self) -> None:
        """Consume again on a fresh channel; jobs of the old one are stale from now on."""
        async with self._restoring:
            if self._closed or (self._channel is not None and self.link.is_current(self._channel)):
                return
            for job in [*self._leased]:
                self.release(job)
            self.link.declared.pop(("queue", self.queue), None)  # it may have been deleted
            await self._attach()

    async def _attach(self) -> None:
        await declare_queue(self.link, self.queue, self.delivery_limit)
        channel = await self.link.channel()
        try:
            with translated(f"consuming {self._source!r}"):
                await channel.basic_qos(prefetch_count=1, timeout=RPC_TIMEOUT_S)
                # current before the first delivery can arrive, so none is taken for stale
                self._channel, self._credits = channel, 1
                await channel.basic_consume(
                    self._source, self._on_message, no_ack=False, timeout=RPC_TIMEOUT_S
                )
        except BaseException:
            if not channel.is_closed:
                await asyncio.gather(channel.close(), return_exceptions=True)
            raise
        channel.on_consumer_cancel_callbacks.add(lambda _: self._spawn_restore())
        channel.closing.add_done_callback(lambda _: self._on_channel_closed(channel))

    def _wants_credit(self) -> bool:
        """Whether a worker asking for a job, none being buffered, gets one more credit.

        The credit follows the demand: the jobs handed out and unsettled plus the readers
        waiting for one (this one included). Since a worker asks only with a free handler slot,
        the credit never exceeds the jobs it can run at once [AMQP-018, WQ-006].
        """
        demand = len(self._leased) + len(self._waiters) + 1
        return self._credits < min(self.options.prefetch, demand)

    async def _grow(self) -> None:
        """One more job of credit: another consumer with prefetch 1 on the channel [AMQP-018]."""
        channel = self._channel
        if channel is None or channel.is_closed:
            return
        self._credits += 1
        try:
            with translated(f"consuming {self._source!r}"):
                await channel.basic_consume(
                    self._source, self._on_message, no_ack=False, timeout=RPC_TIMEOUT_S
                )
        except TransportError as exc:
            self._credits -= 1  # the channel is going; restoring it starts over
            _log.debug("could not add a consumer of %s: %s", self._source, exc)

    def _on_channel_closed(self, channel: Channel) -> None:
        if channel is self._channel and self.link.connected:
            self._spawn_restore()

    def _spawn_restore(self) -> None:
        if not self._closed and self.link.state == "open":
            self.spawn(self._restore_or_end())

    async def _restore_or_end(self) -> None:
        generation = self.link.generation
        try:
            await self.restore()
        except TransportError as exc:
            await asyncio.sleep(0.5)  # a connection that is dropping may still look open
            if self.link.connected and self.link.generation == generation:
                self.lost(
                    TransportError(
                        ErrorCode.UNAVAILABLE,
                        f"the consumer of {self._source!r} ended: {exc.message}",
                    )
                )
