"""Subscriptions of the NATS transport: core NATS messages as contract deliveries.

Theory of operation
-------------------
nats-py hands each message of a subscription to a callback, one at a time, from a task of its
own. The callback here only appends the message to an unbounded :class:`asyncio.Queue` that
the subscription's reader awaits; nothing is parsed or copied until the reader takes it, so the
client's reading task never waits for the runtime. Closing the subscription unsubscribes and
puts a sentinel that ends iteration (messages still queued behind it are dropped, as on any
unsubscribe; the contract says so).

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
from llmproto_ref import Delivery, Notice, TransportError

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
    """A core NATS subscription as a contract ``Subscription``."""

    __slots__ = ("_closed", "_convert", "_queue", "_sub", "dropped")

    def __init__(self, convert: Callable[[nats.aio.msg.Msg], Delivery | None] = to_delivery):
        self._queue: asyncio.Queue[nats.aio.msg.Msg | None] = asyncio.Queue()
        self._convert = convert
        self._sub: nats.aio.subscription.Subscription | None = None
        self._closed = False
        self.dropped = 0  #: messages the conversion refused (e.g. stray status messages)

    def attach(self, sub: nats.aio.subscription.Subscription) -> None:
        """Bind the nats-py subscription created with :meth:`on_message` as its callback."""
        self._sub = sub

    async def on_message(self, msg: nats.aio.msg.Msg) -> None:
        """nats-py's callback: queue the message for the reader."""
        self._queue.put_nowait(msg)

    def __aiter__(self) -> NatsSubscription:
        return self

    async def __anext__(self) -> Delivery:
        while True:
            msg = await self._queue.get()
            if msg is _CLOSED:
                self._queue.put_nowait(_CLOSED)  # every later reader ends as well
                raise StopAsyncIteration
            delivery = self._convert(msg)
            if delivery is not None:
                return delivery
            self.dropped += 1

    async def aclose(self) -> None:
        """Unsubscribe and end iteration; a connection already closed is not an error."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(_CLOSED)
        sub, self._sub = self._sub, None
        if sub is not None:
            # closing on a lost connection is still closed
            with contextlib.suppress(TransportError), translated("unsubscribing"):
                await sub.unsubscribe()

    def end(self) -> None:
        """End iteration at once (the transport closed under it)."""
        self._closed = True
        self._queue.put_nowait(_CLOSED)


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
