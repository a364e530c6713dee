"""Subscriptions: requests, cancels, events and inboxes, each a queue consumed on its own channel.

Theory of operation
-------------------
A :class:`AmqpSubscription` declares its queue (shared and auto-deleted for a group,
exclusive for one subscriber or an inbox), binds it, and consumes it on a channel of its own.
aiormq runs the consumer callback as a task per message, in arrival order; the callback only
appends the message to a buffer and wakes the longest-waiting reader (several tasks may read
one subscription at once [TRN-027]). Requests, cancels and events are
consumed with manual acknowledgement and a prefetch, and acknowledged once handed out: the
prefetch bounds what waits in the buffer, and what an instance had not taken when it died goes
to another member. One ``multiple`` acknowledgement covers the messages handed out while more
were buffered (a burst, at most 32), which saves a frame and a system call per message.
Inboxes are consumed without acknowledgement, as replies are best effort.

After a reconnect (:class:`~llmproto_rabbitmq._link.Link` calls :meth:`restore`), or when the
broker closed only this channel or cancelled the consumer (a deleted queue), the subscription
declares and consumes again on a fresh channel under the same queue name, so an inbox keeps
its address. Buffered messages of a dead channel that needed an acknowledgement are skipped:
the broker delivers them again. A subscription that cannot be restored ends with
``UNAVAILABLE`` [TRN-023].
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity

from llmproto_rabbitmq._declare import RPC_TIMEOUT_S
from llmproto_rabbitmq._errors import translated, unavailable
from llmproto_rabbitmq._link import Channel, Link, delivery_tag, wake
from llmproto_rabbitmq._stats import Counters
from llmproto_ref import Delivery, TransportError, pattern_matches

__all__ = ("AmqpSubscription", "QueueSpec")

_log = logging.getLogger("llmproto_rabbitmq")
#: Most messages handed out before one ``multiple`` acknowledgement covers them.
_ACK_BATCH = 32
#: Attempts to restore a subscription whose queue is still locked by the old connection.
_RESTORE_ATTEMPTS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSpec:
    """The queue one subscription consumes, and how.

    :param name: the queue's name.
    :param exclusive: an exclusive queue (one subscriber, gone with its connection).
    :param arguments: the declaration's arguments.
    :param bindings: (exchange, binding key) pairs.
    :param acked: consume with manual acknowledgement and ``prefetch``.
    :param match: a pattern the routing key must match (patterns ending in ``>``).
    :param kind: what the deliveries carry: requests also a reply address and a message id.
    """

    name: str
    exclusive: bool
    arguments: Mapping[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()
    acked: bool = True
    prefetch: int = 256
    match: str | None = None
    kind: Literal["request", "inbox", "event"] = "event"


class AmqpSubscription:
    """A ``Subscription`` over one AMQP queue."""

    def __init__(
        self,
        link: Link,
        queue: QueueSpec,
        counters: Counters,
        owners: set[AmqpSubscription],
    ) -> None:
        self._link = link
        self._owners = owners
        self._queue = queue
        self._counters = counters
        self._items: deque[DeliveredMessage] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()  #: readers waiting, oldest first
        self._channel: Channel | None = None
        self._unacked = 0  #: the delivery tag of the latest message handed out
        self._acked = 0  #: the delivery tag acknowledged so far (``multiple``)
        self._closed = False
        self._error: TransportError | None = None
        self._restoring = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def queue_name(self) -> str:
        """The queue consumed (an inbox's reply address)."""
        return self._queue.name

    async def start(self) -> AmqpSubscription:
        """Declare, bind and consume; restored after every reconnect from now on."""
        await self._attach_retrying()
        self._link.register(self)
        self._owners.add(self)
        return self

    # -- receiving -----------------------------------------------------------------------

    def __aiter__(self) -> AmqpSubscription:
        return self

    async def __anext__(self) -> Delivery:
        queue = self._queue
        while True:
            if self._items:
                message = self._items.popleft()
                if queue.acked:
                    channel = message.channel
                    if channel is not self._channel or channel.is_closed:
                        continue  # its channel is gone: the broker delivers it again
                    self._unacked = delivery_tag(message)
                    if not self._items or self._unacked - self._acked >= _ACK_BATCH:
                        await self._ack_taken()
                properties = message.header.properties
                if queue.kind == "request":
                    return Delivery(
                        body=message.body,
                        reply_to=properties.reply_to,
                        message_id=properties.message_id,
                    )
                return Delivery(body=message.body)
            if self._error is not None:
                self._closed = True
                raise self._error
            if self._closed:
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif self._items:
                    self._wake()  # woken as it was cancelled: the next reader takes it
                raise

    async def _ack_taken(self) -> None:
        """Acknowledge every message handed out so far, in one frame (``multiple``)."""
        channel, upto = self._channel, self._unacked
        if upto <= self._acked or channel is None or channel.is_closed:
            return
        self._acked = upto
        try:
            await channel.basic_ack(upto, multiple=True, wait=False)
        except Exception as exc:  # noqa: BLE001 - closed meanwhile: delivered again
            _log.debug("acking on a closed channel of %s: %r", self._queue.name, exc)

    def _wake(self, *, everyone: bool = False) -> None:
        wake(self._waiters, everyone=everyone)

    async def _on_message(self, message: DeliveredMessage) -> None:
        if self._closed:
            return
        match = self._queue.match
        if match is not None and not pattern_matches(match, message.routing_key or ""):
            if self._queue.acked:  # '#' matched zero words, which '>' does not [AMQP-004]
                try:
                    await message.channel.basic_ack(delivery_tag(message), wait=False)
                except Exception as exc:  # noqa: BLE001 - closed meanwhile: nothing to settle
                    _log.debug("acking on a closed channel of %s: %r", self._queue.name, exc)
            return
        self._items.append(message)
        self._wake()

    # -- closing and restoring -------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop receiving; what was buffered and not taken is counted [TRN-020].

        The closing runs to its end even when the caller is cancelled meanwhile.
        """
        await asyncio.shield(asyncio.ensure_future(self._close()))

    async def _close(self) -> None:
        await self.flush()
        channel = self.detach()
        if channel is not None and not channel.is_closed:
            try:
                await asyncio.wait_for(channel.close(), RPC_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the broker requeues unacked messages anyway
                _log.debug("closing the channel of %s failed: %r", self._queue.name, exc)

    async def flush(self) -> None:
        """Acknowledge what was handed out, before the channel closes and requeues it."""
        if self._queue.acked and not self._closed:
            try:
                await asyncio.wait_for(self._ack_taken(), RPC_TIMEOUT_S)
            except TimeoutError:
                _log.debug("acknowledging on %s took too long", self._queue.name)

    def detach(self) -> Channel | None:
        """Stop receiving at once; returns the channel left to close."""
        self._closed = True
        self._link.unregister(self)
        self._owners.discard(self)
        self._counters.dropped_on_close += len(self._items)
        self._items.clear()
        self._wake(everyone=True)
        for task in self._tasks:
            task.cancel()
        channel, self._channel = self._channel, None
        return channel

    def lost(self, error: TransportError) -> None:
        """End every iteration with ``error`` [TRN-023]."""
        if not self._closed:
            self._error = error
            self._link.unregister(self)
            self._wake(everyone=True)

    async def restore(self) -> None:
        """Consume again on a fresh channel (after a reconnect, a closed channel, a cancel)."""
        async with self._restoring:
            if self._closed:
                return
            if self._channel is not None and self._link.is_current(self._channel):
                return  # restored already by another path
            await self._attach_retrying()

    async def _attach_retrying(self) -> None:
        """Attach, again while the queue is locked by a connection that is going (exclusive
        queues) or was deleted between its declaration and the consume (auto-delete)."""
        for attempt in range(_RESTORE_ATTEMPTS):
            try:
                await self._attach()
                return
            except TransportError as exc:
                cause = exc.__cause__
                passing = isinstance(cause, ChannelLockedResource | ChannelNotFoundEntity)
                if not passing or attempt + 1 == _RESTORE_ATTEMPTS or not self._link.connected:
                    raise
                await asyncio.sleep(0.1)

    async def _attach(self) -> None:
        queue = self._queue
        channel = await self._link.channel()
        try:
            with translated(f"consuming {queue.name!r}"):
                if queue.acked:
                    await channel.basic_qos(prefetch_count=queue.prefetch, timeout=RPC_TIMEOUT_S)
                await channel.queue_declare(
                    queue.name,
                    durable=not queue.exclusive,
                    exclusive=queue.exclusive,
                    auto_delete=True,
                    arguments=dict(queue.arguments),
                    timeout=RPC_TIMEOUT_S,
                )
                for exchange, key in queue.bindings:
                    await channel.queue_bind(
                        queue.name, exchange, routing_key=key, timeout=RPC_TIMEOUT_S
                    )
                # current before the first delivery can arrive, so none is taken for stale
                old, self._channel = self._channel, channel
                self._unacked = self._acked = 0  # delivery tags start again on a channel
                await channel.basic_consume(
                    queue.name, self._on_message, no_ack=not queue.acked, timeout=RPC_TIMEOUT_S
                )
        except BaseException:
            if not channel.is_closed:
                await asyncio.gather(channel.close(), return_exceptions=True)
            raise
        if old is not None and not old.is_closed:
            await asyncio.gather(old.close(), return_exceptions=True)
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)
        channel.closing.add_done_callback(lambda _: self._on_channel_closed(channel))

    def _on_cancel(self, _frame: object) -> None:
        """The broker cancelled the consumer (its queue was deleted): consume again."""
        self._spawn_restore()

    def _on_channel_closed(self, channel: Channel) -> None:
        if channel is self._channel and self._link.connected:
            self._spawn_restore()  # only this channel closed: the link will not restore it
        # a lost connection is restored by the link

    def _spawn_restore(self) -> None:
        if self._closed or self._link.state != "open":
            return
        task = asyncio.get_running_loop().create_task(self._restore_or_end())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _restore_or_end(self) -> None:
        generation = self._link.generation
        try:
            await self.restore()
        except TransportError as exc:
            await asyncio.sleep(0.5)  # a connection that is dropping may still look open
            if self._link.connected and self._link.generation == generation:
                self.lost(unavailable(f"the subscription to {self._queue.name!r} ended", exc))
