"""The RabbitMQ transport: the transport contract over AMQP 0-9-1 (spec/bindings/amqp.md).

Theory of operation
-------------------
One :class:`RabbitMQTransport` is one AMQP connection (:class:`~llmproto_rabbitmq._link.Link`,
which reconnects and restores by itself). Every message it publishes is built by the pure
mapping (:mod:`llmproto_rabbitmq._mapping`), so the binding vectors describe exactly what
goes on the wire. Requests, replies and jobs are published ``mandatory`` on a confirming
channel: a request or job that no queue takes comes back as ``basic.return`` before its
confirm, and is ``NO_RESPONDERS`` at once [AMQP-011]; a returned reply is counted. Events and
cancels are published without confirms. Subscriptions and consumers live in
:mod:`~llmproto_rabbitmq._subscription` and :mod:`~llmproto_rabbitmq._queue`.

The transport never parses a body; it refuses a body over ``max_payload`` before publishing,
and every failure of the client library becomes a :class:`~llmproto_ref.TransportError`.
aiormq is an asyncio library: the transport runs under anyio's asyncio backend and refuses
trio with ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sniffio

from llmproto_rabbitmq._declare import Dedup, declare_queue, delete_queue
from llmproto_rabbitmq._link import Link
from llmproto_rabbitmq._mapping import (
    EXCHANGE_CANCEL,
    EXCHANGE_EVENTS,
    EXCHANGE_RPC,
    binding_key,
    cancel_message,
    event_message,
    event_queue,
    inbox_queue,
    job_message,
    private_queue,
    reply_message,
    request_message,
    serve_queue,
)
from llmproto_rabbitmq._queue import AmqpConsumer
from llmproto_rabbitmq._stats import Counters
from llmproto_rabbitmq._subscription import AmqpSubscription, QueueSpec
from llmproto_ref import (
    BrokerStats,
    Capabilities,
    Consumer,
    ErrorCode,
    Inbox,
    QueueOptions,
    Subscription,
    TransportError,
    validate_queue_name,
)

__all__ = ("DEFAULT_OPTIONS", "RabbitMQTransport")

#: The binding's URL options and their defaults (times in milliseconds) [AMQP-024].
DEFAULT_OPTIONS: dict[str, int] = {
    "max_payload": 1_048_576 + 65_536,
    "dedup_window_ms": 120_000,
    "delivery_limit": 100,
    "prefetch": 256,
    "reconnect_wait_ms": 5_000,
    "publish_timeout_ms": 10_000,
}
#: Options of a dead-letter queue's consumers (lease and prefetch; never dead-lettered again).
DEAD_LETTER_OPTIONS = QueueOptions()
_SHARED: dict[str, Any] = {"x-queue-type": "classic", "x-expires": 60_000}  # [AMQP-005]
_PRIVATE: dict[str, Any] = {"x-queue-type": "classic"}  # one subscriber's, exclusive


def _without_password(url: str) -> str:
    """``url`` with its password, if any, written as ``***`` (for messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "(an unreadable URL)"


def _refuse_trio() -> None:
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "none"
    if library != "asyncio":
        raise TransportError(
            ErrorCode.UNAVAILABLE,
            f"the RabbitMQ transport needs asyncio (its client, aiormq, is an asyncio library), "
            f"not {library}: run it under anyio's asyncio backend",
        )


class RabbitMQTransport:
    """The ``amqp://`` transport (a :class:`~llmproto_ref.Transport`).

    :param url: ``amqp://user:password@host:port/vhost`` or ``amqps://...``; aiormq's own
        query options (``heartbeat``, ``cafile``...) pass through.
    :param name: the first part of the connection's name, ``<name>.<random token>``.
    :param options: the binding's options (:data:`DEFAULT_OPTIONS`).
    :raises ValueError: for a URL that is not AMQP or an option out of range.
    """

    def __init__(
        self, url: str = "amqp://guest:guest@127.0.0.1:5672/", *, name: str = "llmp", **options: int
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"not an AMQP URL: {_without_password(url)!r}")
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        settings = {**DEFAULT_OPTIONS, **options}
        if any(value < 1 for value in settings.values()):
            raise ValueError(f"every option must be positive: {settings}")
        self._settings = settings
        self._token = secrets.token_hex(6)
        self._label = f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}{parts.path or '/'}"
        self._link = Link(
            url,
            connection_name=f"{name}.{self._token}",
            label=self._label,
            reconnect_wait_s=settings["reconnect_wait_ms"] / 1000,
            publish_timeout_s=settings["publish_timeout_ms"] / 1000,
        )
        self._max_payload = settings["max_payload"]
        self._capabilities = Capabilities(max_payload=self._max_payload)
        self._counters = Counters()
        self._dedup = Dedup(settings["dedup_window_ms"] / 1000)
        self._names = itertools.count(1)
        self._state: Literal["new", "open", "closed"] = "new"
        self._subscriptions: set[AmqpSubscription] = set()
        self._consumers: set[AmqpConsumer] = set()

    @classmethod
    def from_url(cls, url: str) -> RabbitMQTransport:
        """A transport for ``url``; the binding's options ride in its query [AMQP-024].

        ``amqp://guest:guest@host:5672/?prefetch=64&max_payload=2097152``; not connected
        until ``async with``.

        :raises TransportError: ``INVALID_PARAMS`` for a malformed URL or option.
        """
        try:
            parts = urlsplit(url)
            query = parse_qsl(parts.query, keep_blank_values=True)
            ours = {k: int(v) for k, v in query if k in DEFAULT_OPTIONS}
            name = next((v for k, v in query if k == "name"), "llmp")
            rest = [(k, v) for k, v in query if k not in DEFAULT_OPTIONS and k != "name"]
            plain = urlunsplit(parts._replace(query=urlencode(rest)))
            return cls(plain, name=name, **ours)
        except ValueError as exc:
            raise TransportError(
                ErrorCode.INVALID_PARAMS, f"malformed AMQP URL {_without_password(url)!r}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<RabbitMQTransport {self.connection_name} {self._state}>"

    @property
    def capabilities(self) -> Capabilities:
        """Everything the contract defines; ``max_payload`` as configured."""
        return self._capabilities

    @property
    def name(self) -> str:
        """``amqp://host:port/vhost``, without credentials."""
        return self._label

    @property
    def connection_name(self) -> str:
        """The ``connection_name`` the broker lists for this transport's connection."""
        return self._link.connection_name

    @property
    def stats(self) -> BrokerStats:
        """What did not go the ordinary way so far [TRN-020]."""
        return self._counters.snapshot()

    @property
    def reconnects(self) -> int:
        """How often the connection was lost and made again."""
        return self._link.reconnects

    async def __aenter__(self) -> RabbitMQTransport:
        _refuse_trio()
        if self._state != "new":
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self.name} cannot be opened twice")
        await self._link.open()
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close everything, to the end even when the caller is cancelled meanwhile."""
        await asyncio.shield(asyncio.ensure_future(self._close()))

    async def _close(self) -> None:
        for subscription in [*self._subscriptions]:
            await subscription.flush()  # what was handed out must not be delivered again
        self._state = "closed"
        for consumer in [*self._consumers]:
            consumer.detach()
        for subscription in [*self._subscriptions]:
            subscription.detach()
        self._consumers.clear()
        self._subscriptions.clear()
        await self._link.close()

    def _checked(self, body: bytes) -> bytes:
        body = bytes(body)
        if len(body) > self._max_payload:
            raise TransportError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"body of {len(body)} bytes is over {self.name}'s limit of {self._max_payload} "
                "[AMQP-016]",
            )
        return body

    async def _subscribe(self, queue: QueueSpec) -> AmqpSubscription:
        await self._link.ready()
        subscription = AmqpSubscription(self._link, queue, self._counters, self._subscriptions)
        return await subscription.start()

    def _private(self) -> str:
        return f"{self._token}.{next(self._names)}"

    # -- request-response ----------------------------------------------------------------

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        """Requests for types matching ``type_pattern``, shared by ``group`` [AMQP-005]."""
        name = serve_queue(group, type_pattern)
        return await self._subscribe(
            QueueSpec(
                name=name,
                exclusive=False,
                arguments=_SHARED,
                bindings=((EXCHANGE_RPC, binding_key(type_pattern)),),
                prefetch=self._settings["prefetch"],
                match=type_pattern if type_pattern.endswith(">") else None,
                kind="request",
            )
        )

    async def send_request(self, type: str, body: bytes, *, reply_to: str, message_id: str) -> None:
        """Publish a request; one that no queue takes is ``NO_RESPONDERS`` at once [AMQP-011]."""
        message = request_message(
            type, self._checked(body), reply_to=reply_to, message_id=message_id
        )
        if not await self._link.publish(message, f"request {type!r}"):
            raise TransportError(
                ErrorCode.NO_RESPONDERS, f"nobody serves {type!r} on {self.name} [AMQP-011]"
            )

    async def open_inbox(self) -> Inbox:
        """A fresh exclusive reply queue; its name is the address [AMQP-012]."""
        subscription = await self._subscribe(
            QueueSpec(
                name=inbox_queue(self._private()), exclusive=True, arguments=_PRIVATE, acked=False,
                kind="inbox",
            )
        )  # fmt: skip
        return Inbox(address=subscription.queue_name, subscription=subscription)

    async def send_reply(self, address: str, body: bytes) -> None:
        """Publish a reply; one that no inbox takes is counted, not raised [AMQP-013]."""
        message = reply_message(address, self._checked(body))
        if not await self._link.publish(message, f"reply to {address!r}"):
            self._counters.undeliverable += 1

    # -- cancels and events ----------------------------------------------------------------

    async def publish_cancel(self, type: str, body: bytes) -> None:
        """Broadcast a cancel to every ``serve_cancels`` subscription matching ``type``."""
        message = cancel_message(type, self._checked(body))
        await self._link.publish_plain(message, f"cancel of {type!r}")

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        """Every cancel for types matching ``type_pattern``, on an exclusive queue."""
        key = binding_key(type_pattern)
        return await self._subscribe(
            QueueSpec(
                name=private_queue("cancel", self._private()),
                exclusive=True,
                arguments=_PRIVATE,
                bindings=((EXCHANGE_CANCEL, key),),
                prefetch=self._settings["prefetch"],
                match=type_pattern if type_pattern.endswith(">") else None,
            )
        )

    async def publish_event(self, type: str, body: bytes) -> None:
        """Publish an event to the event exchange; nobody subscribing is not an error."""
        message = event_message(type, self._checked(body))
        await self._link.publish_plain(message, f"event {type!r}")

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        """Events matching ``pattern``: one queue per group, or an exclusive one [AMQP-005]."""
        key = binding_key(pattern)
        if group is None:
            name, exclusive, arguments = private_queue("evt", self._private()), True, _PRIVATE
        else:
            name, exclusive, arguments = event_queue(group, pattern), False, _SHARED
        return await self._subscribe(
            QueueSpec(
                name=name,
                exclusive=exclusive,
                arguments=arguments,
                bindings=((EXCHANGE_EVENTS, key),),
                prefetch=self._settings["prefetch"],
                match=pattern if pattern.endswith(">") else None,
            )
        )

    # -- work queues -----------------------------------------------------------------------

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Store a job, persistent and confirmed, once per ``message_id`` [AMQP-015, AMQP-017]."""
        if not message_id:
            raise TransportError(ErrorCode.INVALID_PARAMS, "message_id must not be empty")
        message = job_message(queue, self._checked(body), message_id=message_id)
        if self._dedup.enqueued_before(queue, message_id):
            self._counters.duplicates += 1
            await self._link.ready()  # a closed transport still refuses
            return
        await declare_queue(self._link, queue, self._settings["delivery_limit"])
        if not await self._link.publish(message, f"enqueue to {queue!r}"):
            self._link.declared.pop(("queue", queue), None)
            raise TransportError(
                ErrorCode.NO_RESPONDERS, f"no queue took the job for {queue!r} [AMQP-011]"
            )
        self._dedup.stored(queue, message_id)

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        """Compete for the jobs of ``queue`` with ``options`` of this consumer's own."""
        return await self._consumer(queue, options, dead=False)

    async def dead_letters(self, queue: str) -> Consumer:
        """Take the dead letters of ``queue``; each job's ``reason`` says why [AMQP-023]."""
        return await self._consumer(queue, DEAD_LETTER_OPTIONS, dead=True)

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue``: its quorum queue, its dead-letter queue and the delay queues this
        process declared for it (optional operation, spec/transport.md, Work queues).

        A queue that does not exist is fine. This transport's consumers of the queue end first;
        a consumer of it on another connection is cancelled by the broker and receives nothing
        more (after a reconnect it declares the queue again), so delete a queue only when
        nobody consumes it. Delay queues declared by another process stay until they expire
        (``x-expires``).
        """
        validate_queue_name(queue)
        await self._link.ready()
        for consumer in [c for c in self._consumers if c.queue == queue]:
            await consumer.aclose()
        await delete_queue(self._link, queue)
        self._dedup.forget(queue)

    async def _consumer(self, queue: str, options: QueueOptions, *, dead: bool) -> Consumer:
        validate_queue_name(queue)
        await self._link.ready()
        consumer = AmqpConsumer(
            self._link,
            queue,
            options,
            dead=dead,
            counters=self._counters,
            dedup=self._dedup,
            delivery_limit=self._settings["delivery_limit"],
            owners=self._consumers,
        )
        return await consumer.start()
