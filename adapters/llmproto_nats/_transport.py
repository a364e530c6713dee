"""The NATS transport: the transport contract on nats-py (spec/bindings/nats.md).

Theory of operation
-------------------
One :class:`NatsTransport` is one NATS connection. Requests, cancels, events and replies are
core NATS messages on the binding's subjects (:mod:`llmproto_nats._mapping`); work queues are
JetStream streams (:mod:`llmproto_nats._jetstream`). The transport only moves bytes and maps
failures: it never parses a body, and every nats-py failure becomes a
:class:`~llmproto_ref.TransportError` (:mod:`llmproto_nats._errors`).

Connection loss: nats-py reconnects on its own and re-subscribes every subscription, so
services and inboxes come back without help; pull consumers re-issue their pulls. While the
connection is down, a request or an event is refused at once with ``UNAVAILABLE`` rather than
buffered (core NATS would deliver it late or never); a request already in flight ends when its
deadline passes (the runtime's clock), since core NATS loses replies sent during the gap.
An enqueue is reported done only after its PubAck, and fails with ``UNAVAILABLE`` when none
comes in time: then it may or may not be stored, and repeating it is safe because the stream
drops a repeated ``Nats-Msg-Id`` [NATS-022].

nats-py is an asyncio library: the transport works under anyio's asyncio backend and refuses
trio with ``UNAVAILABLE``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import nats
import nats.aio.client
import nats.aio.msg
import nats.js
import sniffio

from llmproto_nats._errors import CLIENT_ERRORS, failure, translated
from llmproto_nats._jetstream import (
    DEAD_CONSUMER,
    DEAD_OPTIONS,
    WORK_CONSUMER,
    PullConsumer,
    QueueStreams,
)
from llmproto_nats._mapping import (
    HEADER_MSG_ID,
    INBOX_PREFIX,
    cancel_subject,
    encode_header_value,
    event_pattern,
    event_subject,
    queue_subject,
    request_subject,
)
from llmproto_nats._subscription import InboxTokens, NatsSubscription, is_token
from llmproto_ref import (
    Capabilities,
    Consumer,
    ErrorCode,
    Inbox,
    QueueOptions,
    Subscription,
    TransportError,
    validate_pattern,
    validate_queue_name,
)

__all__ = ("NatsTransport",)

_log = logging.getLogger("llmproto_nats")

#: The server's default ``max_payload``, assumed until the connection says otherwise.
DEFAULT_SERVER_MAX_PAYLOAD = 1_048_576
#: Bytes of each message kept for the binding's headers [NATS-020].
HEADER_ALLOWANCE = 1_024
#: What one subscription may hold unread before nats-py drops messages as a slow consumer.
PENDING_MESSAGES = 1_000_000
PENDING_BYTES = 1 << 30
#: URL query options: name -> default (milliseconds unless the name says otherwise).
OPTIONS = {
    "connect_timeout_ms": 2_000,
    "reconnect_wait_ms": 250,
    "max_reconnect_attempts": -1,  # keep trying: a broker restart must not end a service
    "request_timeout_ms": 5_000,  # JetStream API calls and PubAcks
    "dedup_window_ms": 120_000,
    "drain_timeout_ms": 5_000,
}


class NatsTransport:
    """The transport contract over one NATS connection [NATS-001..NATS-029].

    :param servers: server URLs (``nats://host:port``, ``tls://...``), credentials included.
    :param name: the connection's name as the server shows it.
    :param options: see :data:`OPTIONS`.
    """

    def __init__(self, servers: list[str], *, name: str | None = None, **options: int) -> None:
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise TransportError(
                ErrorCode.INVALID_PARAMS,
                f"unknown NATS transport option {sorted(unknown)[0]!r}; known: "
                + ", ".join(OPTIONS),
            )
        self._servers = servers
        self._options = {**OPTIONS, **options}
        self._client_token = secrets.token_hex(8)
        self._name = name or f"llmproto-{self._client_token}"
        self._nc: nats.aio.client.Client | None = None
        self._js: nats.js.JetStreamContext | None = None
        self._subscriptions: set[NatsSubscription] = set()
        self._consumers: set[PullConsumer] = set()
        self._streams = QueueStreams(self)
        self._inboxes: dict[str, InboxTokens] = {}
        self._inbox_count = 0
        self._capabilities = Capabilities(max_payload=DEFAULT_SERVER_MAX_PAYLOAD - HEADER_ALLOWANCE)
        self._errors_logged = 0
        self.disconnects = 0  #: times the connection was lost
        self.reconnects = 0  #: times it came back
        self.client_errors: list[str] = []  #: the latest asynchronous errors nats-py reported
        self._dropped_before = 0  #: dropped by subscriptions of an earlier connection

    @classmethod
    def from_url(cls, url: str) -> NatsTransport:
        """A transport for ``nats://[user:password@]host:port[,host:port][?options]``.

        :raises TransportError: ``INVALID_PARAMS`` for a malformed URL or option.
        """
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise TransportError(ErrorCode.INVALID_PARAMS, f"malformed NATS URL {url!r}") from exc
        if parts.scheme not in ("nats", "tls") or not parts.netloc:
            raise TransportError(
                ErrorCode.INVALID_PARAMS, f"a NATS URL is nats://host:port[?options], not {url!r}"
            )
        if parts.path not in ("", "/") or parts.fragment:
            raise TransportError(ErrorCode.INVALID_PARAMS, f"a NATS URL has no path: {url!r}")
        options: dict[str, int] = {}
        name: str | None = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "name":
                name = value
                continue
            if key not in OPTIONS:
                raise TransportError(
                    ErrorCode.INVALID_PARAMS,
                    f"unknown NATS transport option {key!r} in {url!r}; known: name, "
                    + ", ".join(OPTIONS),
                )
            try:
                options[key] = int(value)
            except ValueError:
                raise TransportError(
                    ErrorCode.INVALID_PARAMS, f"{key} must be an integer, not {value!r}"
                ) from None
        userinfo, _, hosts = parts.netloc.rpartition("@")
        prefix = f"{userinfo}@" if userinfo else ""
        servers = [
            urlunsplit((parts.scheme, prefix + host, "", "", "")) for host in hosts.split(",")
        ]
        return cls(servers, name=name, **options)

    def __repr__(self) -> str:
        return f"NatsTransport({self.name!r})"

    # -- what the runtime and the suite see ------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def name(self) -> str:
        hosts = ",".join(urlsplit(s).hostname or "" for s in self._servers)
        port = urlsplit(self._servers[0]).port
        return f"nats://{hosts}:{port}" if port else f"nats://{hosts}"

    @property
    def dropped(self) -> int:
        """Messages received and never delivered: stray status messages, and what was still
        queued when its subscription closed [TRN-020]. nats-py's slow-consumer drops are in
        :attr:`client_errors`."""
        return self._dropped_before + sum(sub.dropped for sub in self._subscriptions)

    @property
    def dedup_window_s(self) -> float:
        return self._options["dedup_window_ms"] / 1000

    @property
    def request_timeout_s(self) -> float:
        return self._options["request_timeout_ms"] / 1000

    def connection(self) -> nats.aio.client.Client:
        """The open connection.

        :raises TransportError: ``UNAVAILABLE`` outside ``async with``.
        """
        nc = self._nc
        if nc is None or nc.is_closed:
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self!r} is not open")
        return nc

    def jetstream(self) -> nats.js.JetStreamContext:
        """The connection's JetStream context."""
        self.connection()
        if self._js is None:
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self!r} is not open")
        return self._js

    def _connected(self, doing: str) -> nats.aio.client.Client:
        nc = self.connection()
        if not nc.is_connected:
            raise TransportError(
                ErrorCode.UNAVAILABLE, f"NATS: {doing}: the connection is down (reconnecting)"
            )
        return nc

    def _checked(self, body: bytes) -> None:
        limit = self._capabilities.max_payload
        if len(body) > limit:
            raise TransportError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"a body of {len(body)} bytes is over this NATS server's limit of {limit} "
                f"(max_payload less {HEADER_ALLOWANCE} bytes for headers) [NATS-020]",
            )

    # -- connecting ------------------------------------------------------------------------

    async def __aenter__(self) -> NatsTransport:
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = "none"
        if library != "asyncio":
            raise TransportError(
                ErrorCode.UNAVAILABLE,
                f"the NATS binding runs on asyncio (nats-py); this is {library}",
            )
        if self._nc is not None:
            raise TransportError(ErrorCode.INVALID_PARAMS, f"{self!r} is already open")
        opts = self._options
        # nats-py retries a refused first connection forever: the connect timeout bounds it.
        try:
            with translated(f"connecting to {self.name}"):
                nc = await asyncio.wait_for(
                    nats.connect(
                        self._servers,
                        name=self._name,
                        connect_timeout=opts["connect_timeout_ms"] / 1000,
                        reconnect_time_wait=opts["reconnect_wait_ms"] / 1000,
                        max_reconnect_attempts=opts["max_reconnect_attempts"],
                        drain_timeout=opts["drain_timeout_ms"] / 1000,
                        allow_reconnect=True,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnect,
                        reconnected_cb=self._on_reconnect,
                    ),
                    timeout=opts["connect_timeout_ms"] / 1000,  # [NATS-036]
                )
        except TransportError as exc:
            raise TransportError(
                ErrorCode.UNAVAILABLE,
                f"NATS: cannot connect to {self.name}: {exc.message}"
                + (f" (last client error: {self.client_errors[-1]})" if self.client_errors else ""),
            ) from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout_s)
        server_max = nc.max_payload or DEFAULT_SERVER_MAX_PAYLOAD
        self._capabilities = Capabilities(max_payload=server_max - HEADER_ALLOWANCE)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            sub.end()  # their readers end at once
        for consumer in list(self._consumers):
            consumer.end()
        self._consumers.clear()
        nc, self._nc = self._nc, None
        try:
            await self._close_connection(nc, subscriptions)
        finally:
            self._dropped_before = self.dropped
            self._subscriptions.clear()

    async def _close_connection(
        self, nc: nats.aio.client.Client | None, subscriptions: list[NatsSubscription]
    ) -> None:
        if nc is None or nc.is_closed:
            return
        try:
            for sub in subscriptions:  # unsubscribed, so the drain does not wait for them
                await sub.aclose()
            with translated("draining the connection"):
                await nc.drain()
        except (TransportError, asyncio.CancelledError):
            pass
        finally:
            if not nc.is_closed:
                try:
                    with translated("closing the connection"):
                        await nc.close()
                except TransportError:
                    pass

    async def _on_error(self, exc: Exception) -> None:
        self.client_errors = [*self.client_errors[-31:], f"{type(exc).__name__}: {exc}"]
        # While connecting the failure is raised instead; during an outage, log the first few
        # refused attempts, not one line per retry.
        if self._nc is not None and self._errors_logged < 3:
            self._errors_logged += 1
            _log.warning("%s: %s: %s", self, type(exc).__name__, exc)

    async def _on_disconnect(self) -> None:
        if self._nc is None or self._nc.is_closed or self._nc.is_draining:
            return  # our own drain or close
        self.disconnects += 1
        _log.warning("%s: connection lost; reconnecting", self)

    async def _on_reconnect(self) -> None:
        self.reconnects += 1
        self._errors_logged = 0
        self._streams.forget()
        for consumer in list(self._consumers):
            consumer.reconnected()  # pull again at once [NATS-035]
        _log.warning("%s: reconnected", self)

    async def _subscribe(
        self,
        subject: str,
        queue: str = "",
        convert: Callable[[nats.aio.msg.Msg], Any] | None = None,
    ) -> NatsSubscription:
        nc = self.connection()
        sub = NatsSubscription(convert) if convert is not None else NatsSubscription()
        with translated(f"subscribing to {subject}"):
            sub.attach(
                await nc.subscribe(
                    subject,
                    queue=queue,
                    pending_msgs_limit=PENDING_MESSAGES,
                    pending_bytes_limit=PENDING_BYTES,
                )
            )
            # The server must know the subscription before anyone publishes to it: a
            # PING/PONG round trip makes sure it has processed the SUB.
            await nc.flush(timeout=max(1, round(self.request_timeout_s)))
        self._subscriptions.add(sub)
        return sub

    # -- request-response and cancellation -------------------------------------------------

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        validate_queue_name(group)
        return await self._subscribe(request_subject_pattern(type_pattern), queue=group)

    async def send_request(self, type: str, body: bytes, *, reply_to: str, message_id: str) -> None:
        subject = _request_subject(type)
        self._checked(body)
        nc = self._connected("sending a request")
        tokens = self._inboxes.get(reply_to)
        if tokens is not None:
            reply = tokens.reply_subject(message_id)  # per request: a 503 names it [NATS-006]
        elif reply_to:
            check_reply_subject(reply_to)
            reply = reply_to
        else:
            reply = ""  # no reply address: nobody learns of missing responders either
        headers = {HEADER_MSG_ID: encode_header_value(message_id)}  # as mirrored_headers
        try:
            await nc.publish(subject, body, reply=reply, headers=headers)
        except CLIENT_ERRORS as exc:
            raise failure(exc, f"sending a request of {type!r}") from exc

    async def open_inbox(self) -> Inbox:
        self._inbox_count += 1
        client_token = f"{self._client_token}{self._inbox_count}"
        tokens = InboxTokens(f"{INBOX_PREFIX}.{client_token}.")
        sub = await self._subscribe(f"{INBOX_PREFIX}.{client_token}.*", convert=tokens.convert)
        address = f"{INBOX_PREFIX}.{client_token}.inbox"
        self._inboxes[address] = tokens
        return Inbox(address=address, subscription=sub)

    async def send_reply(self, address: str, body: bytes) -> None:
        nc = self._connected("sending a reply")
        check_reply_subject(address)
        self._checked(body)
        try:
            await nc.publish(address, body)  # core NATS, to the reply subject [NATS-019]
        except CLIENT_ERRORS as exc:
            raise failure(exc, "sending a reply") from exc

    async def publish_cancel(self, type: str, body: bytes) -> None:
        subject = _cancel_subject(type)
        self._checked(body)
        nc = self._connected("broadcasting a cancel")
        try:
            await nc.publish(subject, body)  # no headers [NATS-011]
        except CLIENT_ERRORS as exc:
            raise failure(exc, f"broadcasting a cancel of {type!r}") from exc

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        validate_pattern(type_pattern)
        return await self._subscribe(f"llmp.cancel.{type_pattern}")

    # -- events ----------------------------------------------------------------------------

    async def publish_event(self, type: str, body: bytes) -> None:
        subject = _event_subject(type)
        self._checked(body)
        nc = self._connected("publishing an event")
        try:
            await nc.publish(subject, body)  # no headers [NATS-011]
        except CLIENT_ERRORS as exc:
            raise failure(exc, f"publishing an event of {type!r}") from exc

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        subject = event_pattern(pattern)
        if group is not None:
            validate_queue_name(group)
        return await self._subscribe(subject, queue=group or "")

    # -- work queues -----------------------------------------------------------------------

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        subject = queue_subject(queue)
        self._checked(body)
        headers = {HEADER_MSG_ID: encode_header_value(message_id)}
        stream = await self._streams.ensure_stream(queue)
        js = self.jetstream()
        self._connected(f"enqueueing a job on {queue!r}")
        with translated(f"enqueueing a job on {queue!r}"):
            try:
                await js.publish(
                    subject, body, timeout=self.request_timeout_s, stream=stream, headers=headers
                )
            except nats.js.errors.NoStreamResponseError:
                # The stream went away (a server lost its store): set it up again, once.
                self._streams.forget()
                await asyncio.sleep(0.25)
                stream = await self._streams.ensure_stream(queue)
                await js.publish(
                    subject, body, timeout=self.request_timeout_s, stream=stream, headers=headers
                )
        # A PubAck marked duplicate is a success that stored nothing [NATS-023].

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        validate_queue_name(queue)
        return await self._consumer(queue, WORK_CONSUMER, options)

    async def dead_letters(self, queue: str) -> Consumer:
        validate_queue_name(queue)
        return await self._consumer(queue, DEAD_CONSUMER, DEAD_OPTIONS)

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue``: its stream, with its jobs, dead letters and consumers (optional
        operation, spec/transport.md, Work queues); a queue that does not exist is fine.

        This transport's consumers of the queue end first; a consumer of it on another
        connection stops receiving.
        """
        validate_queue_name(queue)
        self._connected(f"deleting queue {queue!r}")
        for consumer in [c for c in self._consumers if c.queue == queue]:
            self._consumers.discard(consumer)
            await consumer.aclose()
        await self._streams.delete_stream(queue)

    async def _consumer(self, queue: str, durable: str, options: QueueOptions) -> PullConsumer:
        info = await self._streams.ensure_consumer(queue, durable, options)
        consumer = PullConsumer(self, queue, durable, options, info)
        await consumer.start()
        self._consumers.add(consumer)
        return consumer


def request_subject_pattern(type_pattern: str) -> str:
    """The subscription subject of requests whose type matches ``type_pattern`` [NATS-008]."""
    validate_pattern(type_pattern)
    return f"llmp.rpc.{type_pattern}"


# Subjects of valid names, computed once per name (an invalid name raises and is not kept).
_request_subject = functools.lru_cache(maxsize=4096)(request_subject)
_cancel_subject = functools.lru_cache(maxsize=4096)(cancel_subject)
_event_subject = functools.lru_cache(maxsize=4096)(event_subject)


@functools.lru_cache(maxsize=8192)
def check_reply_subject(address: str) -> None:
    """Refuse a reply address that is not an inbox subject [NATS-030].

    A reply address comes from a received envelope, so it is not trusted: sending to anything
    but ``_INBOX.<token>.<token>`` would let a caller aim a service's replies at another
    service's subjects.
    """
    tokens = address.split(".")
    if (
        len(address) > 255
        or len(tokens) != 3
        or tokens[0] != INBOX_PREFIX
        or not all(is_token(t) or (t.startswith("~") and is_token(t[1:])) for t in tokens[1:])
    ):
        raise TransportError(
            ErrorCode.INVALID_PARAMS,
            f"reply address {address[:80]!r} is not a NATS inbox subject _INBOX.<token>.<token> "
            "[NATS-030]",
        )
