"""A service and a client joined by the memory transport, plus a raw peer (h11's ConnectionPair).

:class:`RuntimePair` makes a fresh, uniquely named :class:`~llmproto_ref.MemoryBroker` and
opens two :class:`~llmproto_ref.MemoryTransport` instances on it, one for the
:class:`~llmproto_ref.Service` and one for the :class:`~llmproto_ref.Client`: the two share
nothing but bytes. The client's transport is a :class:`RecordingTransport`, which keeps the
bytes the client sends (requests, cancels, jobs) and receives on its inbox, so a test can
assert that the receiver saw exactly what was sent. :class:`RawPeer` speaks the transport API
directly, to inject malformed, late, duplicate or reordered messages::

    pair = RuntimePair()

    @pair.service.handler("t.echo")
    async def echo(request: Request) -> Any:
        return request.data

    async with pair:
        reply = await pair.client.request("t.echo", {"x": 1})
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from llmproto_ref import (
    Client,
    Delivery,
    Envelope,
    EnvelopeError,
    IdempotencyStore,
    Inbox,
    Kind,
    MemoryBroker,
    MemoryTransport,
    Service,
    Subscription,
    decode,
    encode,
    new_id,
)

__all__ = (
    "RawPeer",
    "RecordingTransport",
    "RuntimePair",
    "eventually",
    "quiet",
    "run_in_background",
)

WAIT = 3.0  #: generous bound for something that must happen (noisy 2-core machine)
CLIENT_SOURCE = "llmp://tests/client"


async def eventually(predicate: Callable[[], bool], *, timeout: float = WAIT) -> None:
    """Wait until ``predicate()`` holds, failing the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def quiet(seconds: float = 0.1) -> None:
    """Let the loop run for ``seconds`` (watching for something that must not happen)."""
    await anyio.sleep(seconds)


class _RecordingSubscription:
    """An inbox subscription that keeps every delivery's bytes before passing it on."""

    def __init__(self, inner: Subscription, received: list[bytes]) -> None:
        self._inner = inner
        self._received = received

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            self._received.append(delivery.body)
            yield delivery

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(MemoryTransport):
    """A memory transport that records what passes through it (the client's side)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inboxes: list[str] = []  #: reply addresses opened
        self.requests: list[bytes] = []  #: request bodies sent
        self.cancels: list[bytes] = []  #: cancel bodies broadcast
        self.jobs: list[bytes] = []  #: job bodies enqueued
        self.received: list[bytes] = []  #: bodies that arrived on an inbox

    async def open_inbox(self) -> Inbox:
        inbox = await super().open_inbox()
        self.inboxes.append(inbox.address)
        return Inbox(
            address=inbox.address,
            subscription=_RecordingSubscription(inbox.subscription, self.received),
        )

    async def send_request(self, type: str, body: bytes, *, reply_to: str, message_id: str) -> None:
        self.requests.append(bytes(body))
        await super().send_request(type, body, reply_to=reply_to, message_id=message_id)

    async def publish_cancel(self, type: str, body: bytes) -> None:
        self.cancels.append(bytes(body))
        await super().publish_cancel(type, body)

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        self.jobs.append(bytes(body))
        await super().enqueue(queue, body, message_id=message_id)

    def replies_to(self, request_id: str) -> list[Envelope]:
        """Every decodable reply that arrived for ``request_id``, in arrival order."""
        found = []
        for body in self.received:
            try:
                envelope = decode(body)
            except EnvelopeError:
                continue
            if envelope.correlation_id == request_id:
                found.append(envelope)
        return found

    def sent_requests(self) -> list[Envelope]:
        """The requests the client sent, decoded."""
        return [decode(body) for body in self.requests]


class RawPeer:
    """A participant that writes bytes straight to the transport (no Client, no Service).

    :param transport: its own open memory transport on the pair's broker.
    """

    source = "llmp://tests/raw-peer"

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self._inbox: Inbox | None = None

    async def inbox(self) -> Inbox:
        """The raw peer's own reply address (opened on first use)."""
        if self._inbox is None:
            self._inbox = await self.transport.open_inbox()
        return self._inbox

    async def next_reply(self, timeout: float = WAIT) -> Envelope:
        """The next message on the raw peer's inbox, decoded."""
        inbox = await self.inbox()
        with anyio.fail_after(timeout):
            delivery = await inbox.subscription.__aiter__().__anext__()
        return decode(delivery.body)

    async def send_request(
        self, type_: str, body: bytes, *, reply: bool = True, message_id: str | None = None
    ) -> None:
        """Put ``body`` on the request address of ``type_``, with the raw inbox as reply address."""
        reply_to = (await self.inbox()).address if reply else ""
        await self.transport.send_request(
            type_, body, reply_to=reply_to, message_id=message_id or new_id()
        )

    async def request(self, type_: str, data: Any = None, **members: Any) -> Envelope:
        """A request envelope from the raw peer, answered to its inbox (not sent)."""
        members.setdefault("reply_to", (await self.inbox()).address)
        return Envelope.new(kind=Kind.REQUEST, type=type_, source=self.source, data=data, **members)

    async def reply(self, address: str, body: bytes | Envelope) -> None:
        """Send ``body`` (bytes as they are, or an envelope encoded) to a reply address."""
        raw = encode(body) if isinstance(body, Envelope) else body
        await self.transport.send_reply(address, raw)

    def chunk(
        self, request_id: str, type_: str, seq: int, data: Any = None, **members: Any
    ) -> Envelope:
        """A chunk of the stream ``request_id`` (not sent)."""
        return Envelope.new(
            kind=Kind.CHUNK,
            type=type_,
            source=self.source,
            correlation_id=request_id,
            seq=seq,
            data=data,
            **members,
        )

    def response(self, request_id: str, type_: str, data: Any = None) -> Envelope:
        """A response to ``request_id`` (not sent)."""
        return Envelope.new(
            kind=Kind.RESPONSE, type=type_, source=self.source, correlation_id=request_id, data=data
        )


class RuntimePair:
    """A service and a client on one fresh memory broker, and a raw peer beside them.

    Register handlers on :attr:`service` first, then enter the pair.

    :param serve: enter the service with the pair (``False``: the test enters it later).
    :param service_name: the service's name (its request group).
    :param timeout: the client's default request timeout, in seconds.
    :param grace: the service's shutdown grace period, in seconds.
    """

    def __init__(
        self,
        *,
        serve: bool = True,
        service_name: str = "svc",
        timeout: float = WAIT,
        grace: float = 1.0,
        max_concurrency: int = 256,
        idempotency: IdempotencyStore | None = None,
    ) -> None:
        self.broker_name = f"t{uuid.uuid4().hex}"
        MemoryBroker.reset(self.broker_name)
        self.serve = serve
        self.service_transport = MemoryTransport(self.broker_name)
        self.client_transport = RecordingTransport(self.broker_name)
        self.raw_transport = MemoryTransport(self.broker_name)
        self.service = Service(
            self.service_transport,
            name=service_name,
            grace=grace,
            max_concurrency=max_concurrency,
            idempotency=idempotency,
        )
        self.client = Client(self.client_transport, source=CLIENT_SOURCE, timeout=timeout)
        self.raw = RawPeer(self.raw_transport)
        self._stack = AsyncExitStack()

    @property
    def broker(self) -> MemoryBroker:
        """The broker all three transports share (still readable after the pair closed)."""
        return self.service_transport.broker

    def transport(self) -> MemoryTransport:
        """Another (unopened) transport on the same broker, e.g. for a second service."""
        return MemoryTransport(self.broker_name)

    @property
    def inbox(self) -> str:
        """The client's reply address."""
        return self.client_transport.inboxes[0]

    async def __aenter__(self) -> RuntimePair:
        stack = self._stack
        await stack.__aenter__()
        try:
            await stack.enter_async_context(self.service_transport)
            await stack.enter_async_context(self.client_transport)
            await stack.enter_async_context(self.raw_transport)
            if self.serve:
                await stack.enter_async_context(self.service)
            await stack.enter_async_context(self.client)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            MemoryBroker.reset(self.broker_name)


async def run_in_background(tg: TaskGroup, call: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """Start ``call`` in ``tg``; the returned dict gets ``result`` or ``error`` when it ends."""
    outcome: dict[str, Any] = {}

    async def run() -> None:
        try:
            outcome["result"] = await call()
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever it was
            outcome["error"] = exc

    tg.start_soon(run)
    return outcome
