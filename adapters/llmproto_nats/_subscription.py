"""Subscriptions of the NATS transport: core NATS messages as contract deliveries.

Theory of operation
-------------------
nats-py's reading task puts each message of a subscription made without a callback in the
subscription's pending queue; the subscription's reader awaits that queue directly, so a
message reaches the runtime with one wake-up of the event loop (a callback would add a task
of nats-py's in between). Nothing is parsed or copied until the reader takes it. Closing the
subscription unsubscribes, drops and counts what is still queued [TRN-020], and puts a
sentinel that ends iteration for every reader.

Headers are decoded lazily: the runtime reads the body alone [NATS-012], so a delivery only
pays for percent-decoding [NATS-016] when someone looks at its headers.

A reply inbox is one subscription to ``_INBOX.<client-token>.*`` [NATS-006]. A message on it
with the status ``503`` and no body is the server saying that a request sent with that reply
subject reached nobody [NATS-018]: it becomes a :attr:`~llmproto_ref.Notice.NO_RESPONDERS`
delivery carrying the request's envelope id, which the inbox recovers from the request token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Final

import nats.aio.msg
import nats.aio.subscription

from llmproto_nats._errors import translated
from llmproto_nats._mapping import HEADER_MSG_ID, decode_header_value
from llmproto_ref import Delivery, ErrorCode, Notice, TransportError

__all__: tuple[str, ...] = ()  # internal to the transport

_STATUS = "Status"
_NO_RESPONDERS = "503"
_CLOSED: Final = None  #: the sentinel that ends a reader
#: Request tokens of envelope ids that are not subject tokens, kept for the 503 notice.
_TOKEN_MEMORY = 65_536


def header_value(raw: str) -> str | None:
    """A received header value decoded [NATS-016], ``None`` when malformed (treated absent)."""
    if "%" not in raw and raw.isascii() and raw.isprintable() and " " not in raw:
        return raw
    try:
        return decode_header_value(raw)
    except ValueError:
        return None


class LazyHeaders(Mapping[str, str]):
    """A message's headers, percent-decoded on first use; malformed values are absent."""

    __slots__ = ("_decoded", "_raw")

    def __init__(self, raw: dict[str, str]) -> None:
        self._raw = raw
        self._decoded: dict[str, str] | None = None

    def _items(self) -> dict[str, str]:
        if self._decoded is None:
            decoded = {}
            for name, value in self._raw.items():
                if name == _STATUS:
                    continue
                text = header_value(value)
                if text is not None:
                    decoded[name] = text
            self._decoded = decoded
        return self._decoded

    def __getitem__(self, name: str) -> str:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


_NO_HEADERS: Mapping[str, str] = {}


def to_delivery(msg: nats.aio.msg.Msg) -> Delivery:
    """A contract delivery of a received core NATS message."""
    raw = msg.headers
    if not raw:
        return Delivery(body=msg.data, reply_to=msg.reply or None, headers=_NO_HEADERS)
    msg_id = raw.get(HEADER_MSG_ID)
    return Delivery(
        body=msg.data,
        reply_to=msg.reply or None,
        headers=LazyHeaders(raw),
        message_id=None if msg_id is None else header_value(msg_id),
    )


class NatsSubscription:
    """A core NATS subscription as a contract ``Subscription``.

    It reads the nats-py subscription's own pending queue, which the client's reading task
    fills, instead of giving nats-py a callback: a callback runs in a task of nats-py's that
    would hand each message on to this reader, one event-loop wake-up more per message on the
    path of every request, reply and event. nats-py's own JetStream pull subscriptions read
    that queue the same way; ``tests/test_nats_mapping.py`` fails if a nats-py release moves
    it. The subscription's pending limits bound the queue; beyond them nats-py drops messages
    and reports a slow consumer (counted in the transport's client errors).
    """

    __slots__ = ("_closed", "_convert", "_queue", "_sub", "dropped")

    def __init__(self, convert: Callable[[nats.aio.msg.Msg], Delivery | None] = to_delivery):
        self._queue: asyncio.Queue[nats.aio.msg.Msg | None] | None = None
        self._convert = convert
        self._sub: nats.aio.subscription.Subscription | None = None
        self._closed = False
        #: messages not delivered: refused by the conversion (stray status messages) or
        #: still queued when the subscription closed [TRN-020]
        self.dropped = 0

    def attach(self, sub: nats.aio.subscription.Subscription) -> None:
        """Bind the nats-py subscription (made without a callback) whose queue this reads."""
        queue = pending_queue(sub)
        self._sub = sub
        self._queue = queue

    def __aiter__(self) -> NatsSubscription:
        return self

    async def __anext__(self) -> Delivery:
        queue = self._queue
        if queue is None:
            raise StopAsyncIteration
        while True:
            msg = await queue.get()
            if msg is _CLOSED:
                _put_sentinel(queue)  # every later reader ends as well
                raise StopAsyncIteration
            queue.task_done()  # nats-py's drain waits for every queued message to be done
            sub = self._sub
            if sub is not None:
                sub._pending_size -= len(msg.data)  # noqa: SLF001 - what nats-py does on a read
            delivery = self._convert(msg)
            if delivery is not None:
                return delivery
            self.dropped += 1

    async def aclose(self) -> None:
        """Unsubscribe and end iteration; a connection already closed is not an error."""
        self.end()
        sub, self._sub = self._sub, None
        if sub is not None:
            # closing on a lost connection is still closed
            with contextlib.suppress(TransportError), translated("unsubscribing"):
                await sub.unsubscribe()
            self._discard_queued()  # what arrived before the server saw the UNSUB

    def end(self) -> None:
        """End iteration at once (the transport closed under it)."""
        if not self._closed:
            self._closed = True
            self._discard_queued()

    def _discard_queued(self) -> None:
        """Drop and count what is queued unread, then leave the sentinel for the readers."""
        queue = self._queue
        if queue is None:
            return
        while not queue.empty():
            if queue.get_nowait() is not _CLOSED:
                self.dropped += 1
                queue.task_done()
        _put_sentinel(queue)


def _put_sentinel(queue: asyncio.Queue[nats.aio.msg.Msg | None]) -> None:
    """Queue the end-of-iteration sentinel, not counted as a message to be done (nats-py's
    drain waits until every queued message is done)."""
    queue.put_nowait(_CLOSED)
    queue.task_done()


def pending_queue(
    sub: nats.aio.subscription.Subscription,
) -> asyncio.Queue[nats.aio.msg.Msg | None]:
    """The queue nats-py puts a callback-less subscription's messages in."""
    queue = getattr(sub, "_pending_queue", None)
    if not isinstance(queue, asyncio.Queue):
        raise TransportError(
            ErrorCode.INTERNAL,
            "NATS: this nats-py has no Subscription._pending_queue; the adapter supports "
            "nats-py 2.x releases that have it",
        )
    return queue


class InboxTokens:
    """The request tokens of one client inbox [NATS-006].

    A request whose envelope id is a subject token uses that id; any other id gets ``~<n>``,
    which no grammar token can be, and is remembered (the latest 65,536) so a 503 on that
    subject can still name the request.
    """

    __slots__ = ("_counter", "_ids", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  #: ``_INBOX.<client-token>.``
        self._ids: OrderedDict[str, str] = OrderedDict()
        self._counter = 0

    def reply_subject(self, message_id: str) -> str:
        """The reply subject of the request whose envelope id is ``message_id``."""
        if is_token(message_id):
            return self.prefix + message_id
        self._counter += 1
        token = f"~{self._counter}"
        self._ids[token] = message_id
        if len(self._ids) > _TOKEN_MEMORY:
            self._ids.popitem(last=False)
        return self.prefix + token

    def message_id(self, subject: str) -> str | None:
        """The envelope id whose request had reply ``subject``, if known."""
        token = subject[len(self.prefix) :]
        if token.startswith("~"):
            return self._ids.pop(token, None)
        return token or None

    def convert(self, msg: nats.aio.msg.Msg) -> Delivery | None:
        """An inbox message as a delivery: a 503 status becomes the NO_RESPONDERS notice."""
        raw = msg.headers
        if raw and not msg.data and raw.get(_STATUS, "").startswith(_NO_RESPONDERS):
            return Delivery(
                body=b"", notice=Notice.NO_RESPONDERS, message_id=self.message_id(msg.subject)
            )
        if raw and _STATUS in raw:
            return None  # another server status on an inbox carries no envelope
        return to_delivery(msg)


_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def is_token(text: str) -> bool:
    """Whether ``text`` is one token of the subject grammar [NATS-007]."""
    return 0 < len(text) <= 64 and _TOKEN_CHARS.issuperset(text)
