"""One AMQP connection that comes back: the transport's link to the broker.

Theory of operation
-------------------
A :class:`Link` owns one aiormq connection, named ``connection_name`` so that an operator (or
a test) can find it with ``rabbitmqctl list_connections name client_properties``, and three
channels on it: the *publisher* (publisher confirms on; requests, replies, jobs and the
binding's own republishes go here, each publish awaiting only its own confirm, so confirms
are pipelined and nothing holds a lock across a round trip), the *plain* channel (no confirms;
events and cancels), and the *control* channel (declarations; reopened when the broker closes
it over a refused declaration). Subscriptions and consumers open channels of their own.

When the connection drops, a supervisor task reconnects with backoff (50 ms doubling to 2 s),
declares the exchanges again and asks every registered :class:`Restorable` (subscriptions,
consumers) to restore itself on the new connection, then lets operations through again.
Meanwhile an operation waits for the link at most ``reconnect_wait_s`` and then fails with
``UNAVAILABLE``; a publish in flight when the connection dropped fails at once with
``UNAVAILABLE`` (its outcome is unknown). ``generation`` counts connections, so that a
delivery can tell that its channel belongs to a connection that is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, cast

import aiormq
import aiormq.abc
from pamqp import commands as spec

from llmproto_rabbitmq._errors import translated, unavailable
from llmproto_rabbitmq._mapping import EXCHANGES, AmqpMessage
from llmproto_ref import ErrorCode, TransportError

__all__ = (
    "Channel",
    "Link",
    "Restorable",
    "delivery_tag",
    "properties_of",
    "redelivered",
    "wake",
)

_log = logging.getLogger("llmproto_rabbitmq")

Channel = aiormq.Channel
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.05, 2.0


class Restorable(Protocol):
    """Something that lives on the connection and must be set up again after a reconnect."""

    async def restore(self) -> None:
        """Set up again on the link's current connection."""

    def lost(self, error: TransportError) -> None:
        """It cannot be restored: end it with ``error`` [TRN-023]."""


def properties_of(message: AmqpMessage) -> spec.Basic.Properties:
    """The basic properties of ``message`` for pamqp."""
    props: dict[str, Any] = dict(message.properties)
    if "type" in props:
        props["message_type"] = props.pop("type")  # pamqp's name for the AMQP property
    if message.headers:
        props["headers"] = message.headers
    return spec.Basic.Properties(**props)


class Link:
    """The connection of one transport, kept open across connection losses.

    :param url: the AMQP URL for aiormq (the binding's own options already removed).
    :param connection_name: the ``connection_name`` client property.
    :param label: the broker's address without credentials, for messages.
    :param reconnect_wait_s: how long an operation waits for a lost connection to return.
    :param publish_timeout_s: how long a publish waits for its confirm.
    """

    def __init__(
        self,
        url: str,
        *,
        connection_name: str,
        label: str,
        reconnect_wait_s: float,
        publish_timeout_s: float,
    ) -> None:
        self.url = url
        self.connection_name = connection_name
        self.label = label  #: the broker's address without credentials, for messages
        self.reconnect_wait_s = reconnect_wait_s
        self.publish_timeout_s = publish_timeout_s
        self.state: Literal["new", "open", "closed"] = "new"
        self.generation = 0
        self.reconnects = 0
        self.server_major = 3
        self.declared: dict[object, float] = {}  #: topology declared on this connection
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._publisher: Channel | None = None
        self._plain: Channel | None = None
        self._control: Channel | None = None
        self._ready = asyncio.Event()
        self._reopening = asyncio.Lock()
        self._restorables: dict[Restorable, None] = {}  # an ordered set
        self._supervisor: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect for the first time and start watching the connection.

        :raises TransportError: ``UNAVAILABLE`` when the broker cannot be reached.
        """
        try:
            await asyncio.wait_for(self._connect(), self.reconnect_wait_s or None)
        except TransportError:
            raise
        except Exception as exc:
            raise unavailable(
                f"cannot connect to {self.label} (connection {self.connection_name})", exc
            ) from exc
        self.state = "open"
        self._ready.set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self) -> None:
        """Close the connection; nothing is restored any more."""
        self.state = "closed"
        self._ready.set()  # wake waiters: they see the state and fail
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(connection.close(), 5.0)
            except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail
                _log.debug("closing %s failed: %r", self.connection_name, exc)

    def register(self, item: Restorable) -> None:
        """Restore ``item`` after every reconnect until :meth:`unregister`."""
        self._restorables[item] = None

    def unregister(self, item: Restorable) -> None:
        """Stop restoring ``item``."""
        self._restorables.pop(item, None)

    @property
    def closed(self) -> bool:
        """Whether the transport closed the link for good."""
        return self.state == "closed"

    @property
    def connected(self) -> bool:
        """Whether the current connection is open."""
        return self._connection is not None and not self._connection.is_closed

    def is_current(self, channel: Channel) -> bool:
        """Whether ``channel`` is open on the current connection."""
        return (
            not channel.is_closed
            and self._connection is not None
            and channel.connection is self._connection
        )

    async def ready(self) -> aiormq.abc.AbstractConnection:
        """The open connection, waiting for a reconnect at most ``reconnect_wait_s``.

        :raises TransportError: ``UNAVAILABLE`` when the transport is not open, or the
            connection did not come back in time.
        """
        if self.state != "open":
            state = "closed" if self.state == "closed" else "not open yet"
            raise TransportError(ErrorCode.UNAVAILABLE, f"{self.connection_name} is {state}")
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), self.reconnect_wait_s)
            except TimeoutError:
                raise unavailable(
                    f"{self.connection_name} lost its connection and has not reconnected "
                    f"within {self.reconnect_wait_s:g} s"
                ) from None
            if self.state != "open":
                raise TransportError(ErrorCode.UNAVAILABLE, f"{self.connection_name} is closed")
        connection = self._connection
        if connection is None or connection.is_closed:
            raise unavailable(f"{self.connection_name} lost its connection")
        return connection

    # -- channels ------------------------------------------------------------------------

    async def channel(self) -> Channel:
        """A new channel without confirms, for one subscription or consumer.

        While the link restores after a reconnect, the new connection is used at once: the
        subscriptions being restored open their channels this way.
        """
        connection = self._connection
        if self.state != "open" or connection is None or connection.is_closed:
            connection = await self.ready()
        with translated(f"opening a channel on {self.connection_name}"):
            return cast(Channel, await connection.channel(publisher_confirms=False))

    async def control(self) -> Channel:
        """The channel for declarations, reopened when the broker closed it."""
        channel = self._control
        if channel is None or channel.is_closed:
            channel = self._control = await self.channel()
        return channel

    async def declare(self, key: object, declare: Callable[[Channel], Awaitable[None]]) -> None:
        """Run ``declare`` on the control channel once per connection for ``key``."""
        if key in self.declared:
            return
        channel = await self.control()
        with translated("declaring the binding's queues"):
            await declare(channel)
        self.declared[key] = asyncio.get_running_loop().time()

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, message: AmqpMessage, what: str) -> bool:
        """Publish on the confirming channel and wait for the confirm.

        :returns: ``False`` when the broker returned the message (nothing took it).
        :raises TransportError: ``UNAVAILABLE`` when the outcome is unknown, ``OVERLOADED``
            when the broker refused to store it.
        """
        channel = await self._publishing(confirms=True)
        with translated(what):
            outcome: object = await channel.basic_publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                properties=properties_of(message),
                mandatory=message.mandatory,
                timeout=self.publish_timeout_s,
                wait=False,
            )
        if isinstance(outcome, spec.Basic.Ack):
            return True
        if isinstance(outcome, aiormq.abc.DeliveredMessage):
            return False  # basic.return arrived before the confirm
        raise TransportError(ErrorCode.OVERLOADED, f"{what}: the broker refused it ({outcome!r})")

    async def publish_plain(self, message: AmqpMessage, what: str) -> None:
        """Publish without a confirm (events, cancels)."""
        channel = await self._publishing(confirms=False)
        with translated(what):
            await channel.basic_publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                properties=properties_of(message),
                mandatory=message.mandatory,
                wait=False,
            )

    async def _publishing(self, *, confirms: bool) -> Channel:
        """The publishing channel, opened again if the broker closed it (the connection lives)."""
        connection = await self.ready()
        channel = self._publisher if confirms else self._plain
        if channel is not None and not channel.is_closed:
            return channel
        async with self._reopening:
            channel = self._publisher if confirms else self._plain
            if channel is None or channel.is_closed:
                with translated(f"opening a publishing channel on {self.connection_name}"):
                    channel = await self._open_publishing(connection, confirms=confirms)
                if confirms:
                    self._publisher = channel
                else:
                    self._plain = channel
        return channel

    @staticmethod
    async def _open_publishing(
        connection: aiormq.abc.AbstractConnection, *, confirms: bool
    ) -> Channel:
        if not confirms:
            return cast(Channel, await connection.channel(publisher_confirms=False))
        # returns come back as the confirm's result, not as an exception
        channel = cast(
            Channel, await connection.channel(publisher_confirms=True, on_return_raises=False)
        )
        for name, kind in EXCHANGES.items():
            await channel.exchange_declare(name, exchange_type=kind, durable=True)
        return channel

    # -- connecting ----------------------------------------------------------------------

    async def _connect(self) -> None:
        connection = aiormq.Connection(
            self.url, client_properties={"connection_name": self.connection_name}
        )
        await connection.connect()
        try:
            publisher = await self._open_publishing(connection, confirms=True)
            plain = await self._open_publishing(connection, confirms=False)
        except BaseException:
            await connection.close()
            raise
        version = str(connection.server_properties.get("version", "3"))
        self.server_major = int(version.split(".", maxsplit=1)[0]) if version[:1].isdigit() else 3
        self._connection, self._publisher, self._plain, self._control = (
            connection,
            publisher,
            plain,
            None,
        )
        self.declared.clear()
        self.generation += 1

    async def _supervise(self) -> None:
        """Reconnect whenever the connection drops, until the transport closes."""
        while self.state == "open":
            connection = self._connection
            if connection is not None and not connection.is_closed:
                await asyncio.wait([connection.closing])
            if self.closed:
                return
            self._ready.clear()
            _log.warning("%s lost its connection; reconnecting", self.connection_name)
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = _BACKOFF_FIRST_S
        while self.state == "open":
            try:
                await asyncio.wait_for(self._connect(), max(5.0, self.reconnect_wait_s))
            except Exception as exc:  # noqa: BLE001 - keep trying until the transport closes
                _log.debug("%s: reconnect failed: %r", self.connection_name, exc)
                await asyncio.sleep(delay)
                delay = min(_BACKOFF_MAX_S, delay * 2)
                continue
            for item in [*self._restorables]:
                if item not in self._restorables:
                    continue  # closed meanwhile
                try:
                    await item.restore()
                except TransportError as exc:
                    if not self.connected:
                        break  # dropped again: the next round restores everything
                    item.lost(exc)
            if self.connected:
                self.reconnects += 1
                self._ready.set()
                return


def delivery_tag(message: object) -> int:
    """The delivery tag of a delivered message (0 when it has none)."""
    tag = getattr(getattr(message, "delivery", None), "delivery_tag", 0)
    return tag if isinstance(tag, int) else 0


def redelivered(message: object) -> bool:
    """Whether the broker marked a delivered message as delivered before."""
    return getattr(getattr(message, "delivery", None), "redelivered", False) is True


def wake(waiters: deque[asyncio.Future[None]], *, everyone: bool = False) -> None:
    """Wake the longest waiting reader of a subscription or consumer (every one of them when
    it ends); readers remove their own future when they stop waiting otherwise."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            if not everyone:
                return
