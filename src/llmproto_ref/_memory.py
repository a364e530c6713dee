"""The embedded in-memory transport, ``memory://`` (spec/transport.md).

Theory of operation
-------------------
A :class:`MemoryBroker` is the shared state of one broker name in this process: the
request, cancel, event and inbox subscriptions, and the work queues
(:mod:`llmproto_ref._memory_queue`). Every :class:`MemoryTransport` created with the same
name talks through the same broker, and only through bytes: each receiver gets its own
:class:`~llmproto_ref._transport.Delivery`, never a shared envelope object.

Delivery is asynchronous: a publisher puts the bytes on each receiving subscription's own
unbounded anyio memory object stream and returns; the receiver takes them from its own task.
Nothing is dropped silently: what cannot be delivered is counted in :attr:`MemoryBroker.stats`
(replies to a closed or unknown inbox, like NATS core replies, are best effort; deliveries
still buffered when a subscription closes are lost, as on a broker unsubscribe).

Routing, per operation:

- a request goes to one member (round robin) of each ``serve`` group whose pattern matches
  its type, its delivery carrying ``reply_to`` and ``message_id``; with no match at all,
  :meth:`MemoryTransport.send_request` raises ``NO_RESPONDERS`` at once;
- a cancel goes to every ``serve_cancels`` subscription whose pattern matches;
- an event goes to every matching subscription without a group, and to one matching member
  (round robin) of each group; zero subscribers is fine.

Group names are per operation: a ``serve`` group and an event group with the same name are
unrelated. Work queues are created by the first enqueue, consume or dead_letters call; the
first consumer's ``lease_ms`` and ``max_deliveries`` become the queue's and later consumers'
values for those are ignored (``prefetch`` is per consumer). Closing a consumer (or the
transport that opened it) returns its unsettled jobs to the queue at once, never to the
dead-letter queue; their delivery still counts. :meth:`MemoryTransport.delete_queue` removes
a queue with its dead letters: consumers still open on either end, and the broker's counters
keep what the queue counted.

A broker serves one event loop at a time and is not thread-safe.
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Literal

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from llmproto_ref._memory_queue import DEAD_LETTER_OPTIONS, _Consumer, _WorkQueue
from llmproto_ref._registry import ErrorCode
from llmproto_ref._transport import (
    Capabilities,
    Consumer,
    Delivery,
    Inbox,
    QueueOptions,
    Subscription,
    TransportError,
    pattern_matches,
    validate_pattern,
    validate_queue_name,
)

__all__ = ("BrokerStats", "MemoryBroker", "MemoryTransport")

#: Default largest body: the envelope limit (1 MiB) plus 64 KiB of headroom.
DEFAULT_MAX_PAYLOAD = 1_048_576 + 65_536

_Route = Literal["request", "cancel", "event", "inbox"]
#: The counters of :class:`BrokerStats` that work queues keep.
_QUEUE_COUNTERS = ("stale_settles", "duplicates", "expired_leases", "dead_lettered")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerStats:
    """A snapshot of a broker's counters of things that did not go the ordinary way.

    :param undeliverable: replies sent to a closed or unknown inbox (dropped).
    :param dropped_on_close: deliveries still buffered when their subscription closed.
    :param stale_settles: settles and lease extensions of a delivery no longer leased.
    :param duplicates: enqueues dropped because their ``message_id`` was inside the window.
    :param expired_leases: deliveries whose lease ran out before they were settled.
    :param dead_lettered: jobs moved to a dead-letter queue.
    """

    undeliverable: int = 0
    dropped_on_close: int = 0
    stale_settles: int = 0
    duplicates: int = 0
    expired_leases: int = 0
    dead_lettered: int = 0


class _Subscription:
    """One subscription: an unbounded stream of deliveries (a ``Subscription``)."""

    __slots__ = ("_closed", "_on_close", "_receive", "_send", "group", "pattern")

    def __init__(
        self, pattern: str, group: str | None, on_close: Callable[[_Subscription], None]
    ) -> None:
        self.pattern = pattern
        self.group = group
        self._on_close = on_close
        self._closed = False
        send, receive = anyio.create_memory_object_stream[Delivery](math.inf)
        self._send: MemoryObjectSendStream[Delivery] = send
        self._receive: MemoryObjectReceiveStream[Delivery] = receive

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    @property
    def buffered(self) -> int:
        """Deliveries queued and not yet taken."""
        return self._receive.statistics().current_buffer_used

    def deliver(
        self, body: bytes, reply_to: str | None = None, message_id: str | None = None
    ) -> None:
        """Queue a delivery for the receiving task (never blocks: the buffer is unbounded)."""
        self._send.send_nowait(Delivery(body=body, reply_to=reply_to, message_id=message_id))

    async def aclose(self) -> None:
        """Stop receiving; deliveries not yet taken are dropped and counted."""
        self.close()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """Synchronous :meth:`aclose`; ends every iteration of this subscription."""
        if self._closed:
            return
        self._closed = True
        self._on_close(self)
        self._send.close()  # wakes a waiting receiver with EndOfStream
        self._receive.close()


class MemoryBroker:
    """The shared state behind every :class:`MemoryTransport` of one name in this process.

    Look one up with :meth:`named`; tests start clean with :meth:`reset`.
    """

    _registry: ClassVar[dict[str, MemoryBroker]] = {}

    def __init__(self, name: str) -> None:
        self.name = name
        self._routes: dict[_Route, list[_Subscription]] = {"request": [], "cancel": [], "event": []}
        self._inboxes: dict[str, _Subscription] = {}
        self._queues: dict[str, _WorkQueue] = {}
        self._turns: dict[tuple[_Route, str], itertools.count[int]] = {}
        self._undeliverable = 0
        self._dropped_on_close = 0
        self._retired = dict.fromkeys(_QUEUE_COUNTERS, 0)  # counted by queues since deleted

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        """The broker called ``name``, created on first use."""
        broker = cls._registry.get(name)
        if broker is None:
            broker = cls._registry[name] = cls(name)
        return broker

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget the broker ``name`` (every broker when ``None``).

        The next transport with that name gets a fresh, empty broker; transports already
        open keep the one they have.
        """
        if name is None:
            cls._registry.clear()
        else:
            cls._registry.pop(name, None)

    @property
    def stats(self) -> BrokerStats:
        """The counters so far."""
        counts = self._queue_counts([*self._queues.values()])
        return BrokerStats(
            undeliverable=self._undeliverable,
            dropped_on_close=self._dropped_on_close,
            **{name: self._retired[name] + counts[name] for name in _QUEUE_COUNTERS},
        )

    @staticmethod
    def _queue_counts(queues: list[_WorkQueue]) -> dict[str, int]:
        """The work-queue counters of ``queues`` and their dead-letter queues, summed."""
        queues = queues + [q.dead for q in queues if q.dead is not None]
        return {name: sum(getattr(q, name) for q in queues) for name in _QUEUE_COUNTERS}

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(
        self, route: _Route, pattern: str, group: str | None, owners: set[_Subscription]
    ) -> _Subscription:
        """A new subscription, registered here and tracked in ``owners`` until it closes."""

        def on_close(sub: _Subscription) -> None:
            self._dropped_on_close += sub.buffered
            if route == "inbox":
                self._inboxes.pop(pattern, None)
            else:
                self._routes[route].remove(sub)
            owners.discard(sub)

        sub = _Subscription(pattern, group, on_close)
        if route == "inbox":
            self._inboxes[pattern] = sub
        else:
            self._routes[route].append(sub)
        owners.add(sub)
        return sub

    def route(
        self,
        route: _Route,
        name: str,
        body: bytes,
        reply_to: str | None = None,
        message_id: str | None = None,
    ) -> int:
        """Deliver to every matching ungrouped subscription and one member of each group.

        :returns: how many subscriptions received the message.
        """
        groups: dict[str, list[_Subscription]] = {}
        count = 0
        for sub in self._routes[route]:
            if not pattern_matches(sub.pattern, name):
                continue
            if sub.group is None:
                sub.deliver(body, reply_to, message_id)
                count += 1
            else:
                groups.setdefault(sub.group, []).append(sub)
        for group, members in groups.items():
            turns = self._turns.get((route, group))
            if turns is None:
                turns = self._turns[(route, group)] = itertools.count()
            members[next(turns) % len(members)].deliver(body, reply_to, message_id)
            count += 1
        return count

    def reply(self, address: str, body: bytes) -> None:
        """Deliver to the inbox ``address``, or count the reply as undeliverable."""
        inbox = self._inboxes.get(address)
        if inbox is None:
            self._undeliverable += 1
        else:
            inbox.deliver(body)

    def new_inbox_address(self) -> str:
        """A reply address no inbox of this broker uses."""
        while True:
            address = f"_INBOX.{secrets.token_hex(11)}"
            if address not in self._inboxes:
                return address

    def queue(self, name: str) -> _WorkQueue:
        """The work queue ``name``, created on first use."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _WorkQueue(name)
        return queue

    @property
    def queue_names(self) -> frozenset[str]:
        """The names of the work queues that exist now."""
        return frozenset(self._queues)

    def delete_queue(self, name: str) -> None:
        """Remove the work queue ``name`` and its dead letters, if it exists; its consumers end."""
        queue = self._queues.pop(name, None)
        if queue is None:
            return
        for counter, count in self._queue_counts([queue]).items():
            self._retired[counter] += count
        queue.delete()


class MemoryTransport:
    """The ``memory://`` transport: real broker semantics inside one process.

    :param name: the broker name; transports with the same name reach each other.
    :param max_payload: largest body accepted, in bytes (``PAYLOAD_TOO_LARGE`` above it).
    :param dedup_window_ms: how long an enqueued ``message_id`` suppresses duplicates.
    :raises ValueError: for a malformed name or a non-positive limit.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        dedup_window_ms: int = 120_000,
    ) -> None:
        try:
            validate_queue_name(name)
        except TransportError as exc:
            raise ValueError(f"malformed memory broker name {name!r}") from exc
        if max_payload < 1 or dedup_window_ms < 0:
            raise ValueError("max_payload must be positive and dedup_window_ms not negative")
        self._name = name
        self._max_payload = max_payload
        self._window_s = dedup_window_ms / 1000
        self._capabilities = Capabilities(max_payload=max_payload)
        self._state: Literal["new", "open", "closed"] = "new"
        self._broker: MemoryBroker | None = None
        self._subscriptions: set[_Subscription] = set()
        self._consumers: set[_Consumer] = set()

    def __repr__(self) -> str:
        return f"<MemoryTransport {self.name} {self._state}>"

    @property
    def capabilities(self) -> Capabilities:
        """Everything supported; ``max_payload`` as configured."""
        return self._capabilities

    @property
    def name(self) -> str:
        """``memory://<name>``."""
        return f"memory://{self._name}"

    @property
    def broker(self) -> MemoryBroker:
        """The broker this transport uses (looked up at ``__aenter__``).

        :raises TransportError: ``UNAVAILABLE`` before the transport was entered.
        """
        if self._broker is None:
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self.name} was never opened")
        return self._broker

    async def __aenter__(self) -> MemoryTransport:
        if self._state != "new":
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self.name} cannot be opened twice")
        await anyio.lowlevel.checkpoint()
        self._broker = MemoryBroker.named(self._name)
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        for sub in [*self._subscriptions]:
            sub.close()
        for consumer in [*self._consumers]:
            consumer.close()
        await anyio.lowlevel.cancel_shielded_checkpoint()

    async def _open_broker(self) -> MemoryBroker:
        """The broker, checked after a checkpoint; every operation ends its checks here.

        The state is read after the checkpoint, so nothing registers on a transport that
        closed while the caller was suspended.
        """
        await anyio.lowlevel.checkpoint()
        if self._state != "open" or self._broker is None:
            state = "closed" if self._state == "closed" else "not open yet"
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self.name} is {state}")
        return self._broker

    def _checked(self, body: bytes) -> bytes:
        body = bytes(body)  # copies a bytearray or memoryview: receivers share nothing
        if len(body) > self._max_payload:
            raise TransportError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"body of {len(body)} bytes is over {self.name}'s limit of {self._max_payload}",
            )
        return body

    # -- request-response ----------------------------------------------------------------------

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        """Receive requests for types matching ``type_pattern``; one member of ``group`` each."""
        validate_pattern(type_pattern)
        validate_queue_name(group)
        broker = await self._open_broker()
        return broker.subscribe("request", type_pattern, group, self._subscriptions)

    async def send_request(
        self,
        type: str,
        body: bytes,
        *,
        reply_to: str,
        message_id: str,
    ) -> None:
        """Send a request; replies go to ``reply_to`` (``""``: the request has none).

        :param message_id: the envelope's ``id``, carried as :attr:`Delivery.message_id`.
        :raises TransportError: ``NO_RESPONDERS`` at once when no subscription serves ``type``.
        """
        validate_queue_name(type)
        if reply_to:
            validate_queue_name(reply_to)
        body = self._checked(body)
        broker = await self._open_broker()
        if broker.route("request", type, body, reply_to or None, message_id) == 0:
            raise TransportError(ErrorCode.NO_RESPONDERS, f"nobody serves {type!r} on {self.name}")

    async def open_inbox(self) -> Inbox:
        """A fresh ``_INBOX.<random>`` address and the subscription receiving its replies."""
        broker = await self._open_broker()
        address = broker.new_inbox_address()
        sub = broker.subscribe("inbox", address, None, self._subscriptions)
        return Inbox(address=address, subscription=sub)

    async def send_reply(self, address: str, body: bytes) -> None:
        """Send a reply; one to a closed or unknown inbox is dropped and counted."""
        validate_queue_name(address)
        body = self._checked(body)
        broker = await self._open_broker()
        broker.reply(address, body)

    # -- cancels and events ----------------------------------------------------------------------

    async def publish_cancel(self, type: str, body: bytes) -> None:
        """Broadcast a cancel to every ``serve_cancels`` subscription matching ``type``."""
        validate_queue_name(type)
        body = self._checked(body)
        broker = await self._open_broker()
        broker.route("cancel", type, body)

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        """Receive every cancel for types matching ``type_pattern``."""
        validate_pattern(type_pattern)
        broker = await self._open_broker()
        return broker.subscribe("cancel", type_pattern, None, self._subscriptions)

    async def publish_event(self, type: str, body: bytes) -> None:
        """Publish an event: each ungrouped match and one member of each group gets it."""
        validate_queue_name(type)
        body = self._checked(body)
        broker = await self._open_broker()
        broker.route("event", type, body)

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        """Receive events matching ``pattern``; within ``group`` each reaches one member."""
        validate_pattern(pattern)
        if group is not None:
            validate_queue_name(group)
        broker = await self._open_broker()
        return broker.subscribe("event", pattern, group, self._subscriptions)

    # -- work queues -------------------------------------------------------------------------------

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Store a job; a ``message_id`` seen within the dedup window is accepted, not stored."""
        validate_queue_name(queue)
        if not message_id:
            raise TransportError(ErrorCode.INVALID_PARAMS, "message_id must not be empty")
        body = self._checked(body)
        broker = await self._open_broker()
        broker.queue(queue).put(body, message_id, self._window_s)

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        """Compete for jobs of ``queue``; the first consumer's lease and max_deliveries win."""
        validate_queue_name(queue)
        broker = await self._open_broker()
        work = broker.queue(queue)
        work.configure(options)
        return self._consumer(work, options.prefetch)

    async def dead_letters(self, queue: str) -> Consumer:
        """Take the dead letters of ``queue``; each job's ``reason`` says why it is there."""
        validate_queue_name(queue)
        broker = await self._open_broker()
        dead = broker.queue(queue).dead
        if dead is None:  # pragma: no cover - broker.queue() only makes ordinary queues
            raise TransportError(ErrorCode.INTERNAL, f"queue {queue!r} has no dead-letter queue")
        return self._consumer(dead, DEAD_LETTER_OPTIONS.prefetch)

    async def delete_queue(self, queue: str) -> None:
        """Remove ``queue`` and its dead-letter queue with every job in them (spec/transport.md,
        Work queues: an optional operation).

        Consumers still open on either queue end (their iteration stops), and a settle of one
        of their deliveries is stale. A queue that does not exist is not an error; the next
        enqueue, consume or dead_letters call creates the queue afresh.

        :raises TransportError: ``INVALID_PARAMS`` for a malformed name, ``UNAVAILABLE`` when
            the transport is not open.
        """
        validate_queue_name(queue)
        broker = await self._open_broker()
        broker.delete_queue(queue)

    def _consumer(self, queue: _WorkQueue, prefetch: int) -> _Consumer:
        consumer = _Consumer(queue, prefetch, self._consumers.discard)
        self._consumers.add(consumer)
        return consumer
