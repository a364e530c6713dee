"""The raw aio-pika side of ``llmproto bench --native`` (a peer process, and its driver).

Theory of operation
-------------------
The peer is a separate process (``python -m llmproto_conformance._native_amqp URL PREFIX``)
that does with plain aio-pika what the reference testee does with llmproto, and no more:

- the queue ``<PREFIX>.echo``: publish each request's body back to its ``reply_to`` with its
  ``correlation_id`` (direct reply-to, published without ``mandatory``);
- the queue ``<PREFIX>.emit``: publish N copies of the body to the fanout exchange
  ``<PREFIX>.evt``, then reply;
- the durable quorum queue ``<PREFIX>.jobs``: consume with manual acks (prefetch 64), ack
  each job and publish its first 16 bytes to the queue ``<PREFIX>.done``.

The driver (:class:`AmqpNative`) requests over direct reply-to with one consumer and a map
of futures by ``correlation_id`` (no lock), publishes jobs persistent with publisher confirms,
one confirmed before the next (as ``Client.submit`` does), and deletes what the peer declared.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from types import TracebackType

import aio_pika
import aio_pika.abc
import aiormq.exceptions

from llmproto_conformance._peer_process import PeerProcess

__all__ = ("AmqpNative",)

_READY = "native peer ready"
_KEY = 16
_REPLY_TO = "amq.rabbitmq.reply-to"


async def _peer(url: str, prefix: str) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=64)
    exchange = channel.default_exchange
    events = await channel.declare_exchange(f"{prefix}.evt", aio_pika.ExchangeType.FANOUT)

    async def echo(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        reply = aio_pika.Message(message.body, correlation_id=message.correlation_id)
        await exchange.publish(reply, message.reply_to or "", mandatory=False)
        await message.ack()

    async def emit(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        count, _, body = message.body.partition(b"|")
        for _ in range(int(count)):
            await events.publish(aio_pika.Message(body), "", mandatory=False)
        done = aio_pika.Message(b"done", correlation_id=message.correlation_id)
        await exchange.publish(done, message.reply_to or "", mandatory=False)
        await message.ack()

    async def job(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        await exchange.publish(aio_pika.Message(message.body[:_KEY]), f"{prefix}.done")

    for name, handler in (("echo", echo), ("emit", emit)):
        queue = await channel.declare_queue(f"{prefix}.{name}", auto_delete=True)
        await queue.consume(handler)
    await channel.declare_queue(f"{prefix}.done", auto_delete=False)
    jobs = await channel.declare_queue(
        f"{prefix}.jobs", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await jobs.consume(job)
    print(_READY, flush=True)
    await asyncio.Event().wait()


class AmqpNative:
    """Raw aio-pika RPC, events and confirmed jobs against a peer process."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._process = PeerProcess(
            "llmproto_conformance._native_amqp",
            url,
            prefix,
            ready=_READY,
            what="the native AMQP peer",
        )
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._confirmed: aio_pika.abc.AbstractChannel | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._ids = itertools.count()

    async def __aenter__(self) -> AmqpNative:
        await self._process.start()
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self._connection.channel(publisher_confirms=False)
        self._confirmed = await self._connection.channel(publisher_confirms=True)
        replies = await self._channel.get_queue(_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._process.stop()
        if self._connection is not None:
            with contextlib.suppress(aiormq.exceptions.AMQPError, OSError):
                channel = await self._connection.channel()
                for name in ("jobs", "done"):
                    await channel.queue_delete(f"{self.prefix}.{name}")
                await channel.exchange_delete(f"{self.prefix}.evt")
            await self._connection.close()

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    def _chan(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is None:
            raise RuntimeError("use AmqpNative inside 'async with'")
        return self._channel

    async def _request(self, queue: str, body: bytes) -> bytes:
        correlation = str(next(self._ids))
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = future
        message = aio_pika.Message(body, reply_to=_REPLY_TO, correlation_id=correlation)
        await self._chan().default_exchange.publish(message, queue, mandatory=False)
        return await asyncio.wait_for(future, 30)

    async def round_trips(self, body: bytes, width: int, per_caller: int) -> float:
        """Round trips per second with ``width`` callers of ``per_caller`` requests each."""
        queue = f"{self.prefix}.echo"

        async def caller() -> None:
            for _ in range(per_caller):
                await self._request(queue, body)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(width)))
        return width * per_caller / (time.perf_counter() - started)

    async def events(self, body: bytes, count: int) -> float:
        """Events per second from the peer's publish to this side's receipt of the last one."""
        channel = self._chan()
        got = 0
        done = asyncio.Event()

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            got += 1
            if got >= count:
                done.set()

        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(f"{self.prefix}.evt")
        tag = await queue.consume(on_event, no_ack=True)
        started = time.perf_counter()
        await self._request(f"{self.prefix}.emit", b"%d|" % count + body)
        await asyncio.wait_for(done.wait(), 60)
        took = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
        return count / took

    async def jobs(self, body: bytes, count: int) -> float:
        """Jobs per second: each published persistent and confirmed, consumed, acked and
        reported done."""
        channel = self._chan()
        confirmed = self._confirmed
        if confirmed is None:
            raise RuntimeError("use AmqpNative inside 'async with'")
        finished = 0
        done = asyncio.Event()

        async def on_done(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal finished
            finished += 1
            if finished >= count:
                done.set()

        queue = await channel.get_queue(f"{self.prefix}.done", ensure=False)
        tag = await queue.consume(on_done, no_ack=True)
        started = time.perf_counter()
        for n in range(count):
            message = aio_pika.Message(
                b"%016d" % n + body[_KEY:], delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await confirmed.default_exchange.publish(message, f"{self.prefix}.jobs")
        await asyncio.wait_for(done.wait(), 60)
        took = time.perf_counter() - started
        await queue.cancel(tag)
        return count / took


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_peer(sys.argv[1], sys.argv[2]))
