"""Removing the queues a conformance run declared, so that it leaves the broker as it found it.

Theory of operation
-------------------
:func:`~llmproto_conformance._runner.run_suite` hands its checks a factory wrapped by
:meth:`QueueLog.wrap`: every transport the run opens (the reference testee's, the suite's, and
those a check opens for itself) is a :class:`NotingTransport`, which passes every operation
through unchanged and notes in the shared :class:`QueueLog` the name of each queue given to
``enqueue``, ``consume`` or ``dead_letters``. Only well-formed names are noted: a check that
provokes ``INVALID_PARAMS`` created nothing.

When the run ends, however it ends, :func:`delete_queues` makes one more transport with the
plain factory. If the binding offers the optional ``delete_queue`` (spec/transport.md, Work
queues), it opens that transport and deletes each noted queue except the testee's own,
``llmp.testee.jobs``, which an external testee goes on consuming. The deletions are shielded
from cancellation and bounded in time; a failure to delete a queue is counted, never raised,
so that cleaning up cannot change a run's verdict or hide what ended it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from types import TracebackType

import anyio

from llmproto_ref import (
    Capabilities,
    Consumer,
    Inbox,
    QueueOptions,
    Subscription,
    Transport,
    TransportError,
    validate_queue_name,
)

__all__: tuple[str, ...] = ()  # internal to the runner: run_suite is the API

_log = logging.getLogger("llmproto_conformance")

#: How long deleting a run's queues may take in all.
CLEANUP_TIMEOUT_S = 30.0


class QueueLog:
    """The queue names that the transports of one run used, in the order first used."""

    def __init__(self) -> None:
        self._names: dict[str, None] = {}  # an ordered set

    @property
    def names(self) -> list[str]:
        """Every queue noted so far."""
        return [*self._names]

    def note(self, queue: str) -> None:
        """Note ``queue`` if it is a well-formed queue name."""
        if queue in self._names:
            return
        try:
            validate_queue_name(queue)
        except TransportError:
            return
        self._names[queue] = None

    def wrap(self, open_transport: Callable[[], Transport]) -> Callable[[], Transport]:
        """A factory like ``open_transport`` whose transports note their queues here."""

        def noting() -> Transport:
            return NotingTransport(open_transport(), self)

        return noting


class NotingTransport:
    """Delegates every operation to ``inner``; notes each queue name in ``log``."""

    def __init__(self, inner: Transport, log: QueueLog) -> None:
        self.inner = inner
        self._log = log

    def __repr__(self) -> str:
        return f"NotingTransport({self.inner!r})"

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped transport's capabilities."""
        return self.inner.capabilities

    @property
    def name(self) -> str:
        """The wrapped transport's name."""
        return self.inner.name

    async def __aenter__(self) -> NotingTransport:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    async def serve(self, type_pattern: str, *, group: str) -> Subscription:
        return await self.inner.serve(type_pattern, group=group)

    async def send_request(self, type: str, body: bytes, *, reply_to: str, message_id: str) -> None:
        await self.inner.send_request(type, body, reply_to=reply_to, message_id=message_id)

    async def open_inbox(self) -> Inbox:
        return await self.inner.open_inbox()

    async def send_reply(self, address: str, body: bytes) -> None:
        await self.inner.send_reply(address, body)

    async def publish_cancel(self, type: str, body: bytes) -> None:
        await self.inner.publish_cancel(type, body)

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        return await self.inner.serve_cancels(type_pattern)

    async def publish_event(self, type: str, body: bytes) -> None:
        await self.inner.publish_event(type, body)

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        return await self.inner.subscribe_events(pattern, group=group)

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Noted (before the call: a failed enqueue may still have declared the queue)."""
        self._log.note(queue)
        await self.inner.enqueue(queue, body, message_id=message_id)

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        """Noted, then delegated."""
        self._log.note(queue)
        return await self.inner.consume(queue, options)

    async def dead_letters(self, queue: str) -> Consumer:
        """Noted, then delegated."""
        self._log.note(queue)
        return await self.inner.dead_letters(queue)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cleanup:
    """What :func:`delete_queues` did.

    :param deleted: queues deleted (a queue that did not exist counts as deleted).
    :param failed: queues left because a deletion failed or the time ran out.
    """

    deleted: int = 0
    failed: int = 0


async def delete_queues(
    open_transport: Callable[[], Transport],
    queues: Collection[str],
    *,
    timeout_s: float = CLEANUP_TIMEOUT_S,
) -> Cleanup | None:
    """Delete ``queues`` through a fresh transport from ``open_transport``.

    Runs to the end even when the caller is being cancelled, for at most ``timeout_s``.

    :returns: the counts (zero for no ``queues``, without making a transport), or ``None``
        when the binding does not offer ``delete_queue``.
    """
    if not queues:
        return Cleanup()  # nothing to do: not even a transport to make
    deleted = 0
    with anyio.move_on_after(timeout_s, shield=True):
        try:
            transport = open_transport()
        except Exception:  # noqa: BLE001 - it worked for the run; a broken factory must not stop it
            return Cleanup(failed=len(queues))
        delete = getattr(transport, "delete_queue", None)
        if not callable(delete):
            return None
        try:
            async with transport:
                for queue in queues:
                    try:
                        await delete(queue)
                    except TransportError as exc:
                        _log.debug("could not delete queue %r: %s", queue, exc)
                        continue
                    deleted += 1
        except Exception as exc:  # noqa: BLE001 - cleaning up must never change the outcome
            _log.warning("deleting the run's queues on %s failed: %r", transport.name, exc)
    return Cleanup(deleted=deleted, failed=len(queues) - deleted)
