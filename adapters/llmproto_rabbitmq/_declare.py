"""The work queues' topology, and the message ids a transport remembers (spec/bindings/amqp.md).

:func:`declare_queue` declares a queue Q as the quorum queue ``llmp.wq:Q`` with its dead-letter
queue ``llmp.dlq:Q`` [AMQP-006]; :func:`declare_delay` declares the delay queue of one delay,
again whenever it was declared more than half its spare lifetime ago, so that it never expires
while a job waits in it [AMQP-021]. Declarations are made once per connection
(:meth:`~llmproto_rabbitmq._link.Link.declare`). :class:`Dedup` holds what AMQP-017 needs.

:func:`delete_queue` (the optional ``delete_queue`` operation) deletes the work queue, its
dead-letter queue and its delay queues. AMQP 0-9-1 cannot list queues, so the delay queues it
finds are those :func:`declare_delay` noted in this process (:data:`_DELAYS`, any connection,
forgotten once they would have expired); a delay queue that another process declared stays
until its ``x-expires`` removes it, at most its delay plus a minute after its last use.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiormq.exceptions

from llmproto_rabbitmq._errors import translated
from llmproto_rabbitmq._link import Channel, Link
from llmproto_rabbitmq._mapping import (
    EXCHANGE_DEAD,
    EXCHANGE_WORK,
    dead_letter_queue,
    delay_queue,
    work_queue,
)

__all__ = (
    "RPC_TIMEOUT_S",
    "Dedup",
    "declare_delay",
    "declare_queue",
    "delay_bucket",
    "delete_queue",
)

#: Seconds a declaration or a consume may take before it counts as a lost connection.
RPC_TIMEOUT_S = 10.0
#: How long an idle delay queue outlives its delay; redeclared at least this often / 2.
_DELAY_QUEUE_SPARE_MS = 60_000
#: The delay queues declared in this process: queue -> (delay_ms, dead) -> when it expires, at
#: the latest (time.monotonic); what :func:`delete_queue` deletes besides the queue itself.
_DELAYS: dict[str, dict[tuple[int, bool], float]] = {}


class _Window:
    """Keys remembered for ``window_s`` each, oldest first."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._until: dict[tuple[str, str], float] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        now = time.monotonic()
        until = self._until
        while until:
            oldest, end = next(iter(until.items()))
            if end > now:
                break
            del until[oldest]
        window_end = until.get(key)
        return window_end is not None and window_end > now

    def add(self, key: tuple[str, str]) -> None:
        self._until.pop(key, None)
        self._until[key] = time.monotonic() + self._window_s

    def forget(self, queue: str) -> None:
        for key in [k for k in self._until if k[0] == queue]:
            del self._until[key]


class Dedup:
    """The message ids one transport enqueued and took, per queue, within a window [AMQP-017].

    An enqueue is dropped when its id was enqueued or taken by this transport within the
    window; a first delivery is dropped when its id was taken by this transport before.
    """

    def __init__(self, window_s: float) -> None:
        self._enqueued = _Window(window_s)
        self._taken = _Window(window_s)

    def enqueued_before(self, queue: str, message_id: str) -> bool:
        """Whether an enqueue of ``message_id`` repeats one stored or taken in the window."""
        key = (queue, message_id)
        return key in self._enqueued or key in self._taken

    def taken_before(self, queue: str, message_id: str) -> bool:
        """Whether a job with ``message_id`` was taken from ``queue`` in the window."""
        return (queue, message_id) in self._taken

    def stored(self, queue: str, message_id: str) -> None:
        """The broker confirmed an enqueue of ``message_id``."""
        self._enqueued.add((queue, message_id))

    def taken(self, queue: str, message_id: str) -> None:
        """A first delivery of ``message_id`` was handed out."""
        self._taken.add((queue, message_id))

    def forget(self, queue: str) -> None:
        """``queue`` was deleted: forget the ids enqueued to and taken from it."""
        self._enqueued.forget(queue)
        self._taken.forget(queue)


def delay_bucket(delay_ms: int) -> int:
    """``delay_ms`` rounded up to two significant digits, so delays share few queues."""
    if delay_ms < 100:
        return max(1, delay_ms)
    scale = int(10 ** (len(str(delay_ms)) - 2))
    return int(-(-delay_ms // scale) * scale)


async def declare_queue(link: Link, queue: str, delivery_limit: int) -> None:
    """Declare ``queue``'s quorum queue and dead-letter queue with their bindings [AMQP-006]."""

    async def declare(channel: Channel) -> None:
        work, dead = work_queue(queue), dead_letter_queue(queue)
        await channel.queue_declare(
            work,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": EXCHANGE_DEAD,
                "x-dead-letter-routing-key": queue,
                "x-delivery-limit": delivery_limit,
            },
            timeout=RPC_TIMEOUT_S,
        )
        await channel.queue_bind(work, EXCHANGE_WORK, routing_key=queue, timeout=RPC_TIMEOUT_S)
        dead_arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if link.server_major >= 4:
            dead_arguments["x-delivery-limit"] = -1  # 4.x defaults to 20, then drops
        await channel.queue_declare(
            dead, durable=True, arguments=dead_arguments, timeout=RPC_TIMEOUT_S
        )
        await channel.queue_bind(dead, EXCHANGE_DEAD, routing_key=queue, timeout=RPC_TIMEOUT_S)

    await link.declare(("queue", queue), declare)


async def declare_delay(link: Link, queue: str, delay_ms: int, dead: bool) -> None:
    """Declare the delay queue for ``delay_ms`` of ``queue`` (or of its dead letters)."""
    key = ("delay", queue, delay_ms, dead)
    declared = link.declared.get(key)
    now = asyncio.get_running_loop().time()
    if declared is not None and now - declared < _DELAY_QUEUE_SPARE_MS / 2000:
        return
    link.declared.pop(key, None)

    async def declare(channel: Channel) -> None:
        await channel.queue_declare(
            delay_queue(queue, delay_ms, dead=dead),
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": EXCHANGE_DEAD if dead else EXCHANGE_WORK,
                "x-dead-letter-routing-key": queue,
                "x-expires": delay_ms + _DELAY_QUEUE_SPARE_MS,
            },
            timeout=RPC_TIMEOUT_S,
        )

    await link.declare(key, declare)
    _note_delay(queue, delay_ms, dead)


def _note_delay(queue: str, delay_ms: int, dead: bool) -> None:
    """Remember a delay queue of ``queue`` until it would have expired unused."""
    now = time.monotonic()
    delays = _DELAYS.setdefault(queue, {})
    for key in [k for k, until in delays.items() if until <= now]:
        del delays[key]
    delays[(delay_ms, dead)] = now + (delay_ms + _DELAY_QUEUE_SPARE_MS) / 1000


async def delete_queue(link: Link, queue: str) -> None:
    """Delete ``queue``'s delay queues noted in this process, its work queue and its dead-letter
    queue, in that order (each feeds the next); a queue that does not exist is fine."""
    now = time.monotonic()
    delays = sorted(k for k, until in _DELAYS.get(queue, {}).items() if until > now)
    names = [delay_queue(queue, delay_ms, dead=dead) for delay_ms, dead in delays]
    names += [work_queue(queue), dead_letter_queue(queue)]
    for key in [k for k in link.declared if isinstance(k, tuple) and k[1:2] == (queue,)]:
        del link.declared[key]  # ("queue", queue) and ("delay", queue, delay_ms, dead)
    for name in names:
        channel = await link.control()
        # Older RabbitMQ versions refuse to delete a missing queue (closing the channel).
        with (
            translated(f"deleting queue {name!r}"),
            contextlib.suppress(aiormq.exceptions.ChannelNotFoundEntity),
        ):
            await channel.queue_delete(name, timeout=RPC_TIMEOUT_S)
    _DELAYS.pop(queue, None)
