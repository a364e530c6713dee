"""A transport wrapper that records every body the suite sends and receives.

The conformance suite talks to the implementation through this wrapper so that a failing
check can show its wire log: each envelope sent and received, with the operation, the
address and the time since the check started.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType

from llmproto_conformance._model import WireRecord
from llmproto_ref import (
    Capabilities,
    Consumer,
    Delivery,
    Inbox,
    Job,
    QueueOptions,
    Subscription,
    Transport,
)

__all__ = ("RecordingTransport",)


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="backslashreplace")


class RecordingTransport:
    """Delegates every operation to ``inner`` and appends what passes to :attr:`log`."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.log: list[WireRecord] = []
        self._started = time.perf_counter()

    def restart(self) -> list[WireRecord]:
        """Start a new log (a new check) and return the previous one."""
        previous, self.log = self.log, []
        self._started = time.perf_counter()
        return previous

    def _record(self, direction: str, operation: str, address: str, body: bytes) -> None:
        at = (time.perf_counter() - self._started) * 1000
        self.log.append(WireRecord(direction=direction, operation=operation, address=address,
                                   body=_text(body), at_ms=at))  # fmt: skip

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped transport's capabilities."""
        return self.inner.capabilities

    @property
    def name(self) -> str:
        """The wrapped transport's name."""
        return self.inner.name

    async def __aenter__(self) -> RecordingTransport:
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
        """Delegated; deliveries are recorded."""
        return _RecordedSubscription(
            self, "serve", type_pattern, await self.inner.serve(type_pattern, group=group)
        )

    async def send_request(self, type: str, body: bytes, *, reply_to: str, message_id: str) -> None:
        """Delegated and recorded."""
        self._record("sent", "send_request", type, body)
        await self.inner.send_request(type, body, reply_to=reply_to, message_id=message_id)

    async def open_inbox(self) -> Inbox:
        """Delegated; replies arriving at the inbox are recorded."""
        inbox = await self.inner.open_inbox()
        return Inbox(address=inbox.address, subscription=_RecordedSubscription(
            self, "inbox", inbox.address, inbox.subscription))  # fmt: skip

    async def send_reply(self, address: str, body: bytes) -> None:
        """Delegated and recorded."""
        self._record("sent", "send_reply", address, body)
        await self.inner.send_reply(address, body)

    async def publish_cancel(self, type: str, body: bytes) -> None:
        """Delegated and recorded."""
        self._record("sent", "publish_cancel", type, body)
        await self.inner.publish_cancel(type, body)

    async def serve_cancels(self, type_pattern: str) -> Subscription:
        """Delegated; cancels are recorded."""
        return _RecordedSubscription(
            self, "serve_cancels", type_pattern, await self.inner.serve_cancels(type_pattern)
        )

    async def publish_event(self, type: str, body: bytes) -> None:
        """Delegated and recorded."""
        self._record("sent", "publish_event", type, body)
        await self.inner.publish_event(type, body)

    async def subscribe_events(self, pattern: str, *, group: str | None = None) -> Subscription:
        """Delegated; events are recorded."""
        return _RecordedSubscription(
            self,
            "subscribe_events",
            pattern,
            await self.inner.subscribe_events(pattern, group=group),
        )

    async def enqueue(self, queue: str, body: bytes, *, message_id: str) -> None:
        """Delegated and recorded."""
        self._record("sent", "enqueue", queue, body)
        await self.inner.enqueue(queue, body, message_id=message_id)

    async def consume(self, queue: str, options: QueueOptions) -> Consumer:
        """Delegated; jobs are recorded."""
        return _RecordedConsumer(self, queue, await self.inner.consume(queue, options))

    async def dead_letters(self, queue: str) -> Consumer:
        """Delegated; dead-lettered jobs are recorded."""
        return _RecordedConsumer(
            self, f"{queue} (dead letters)", await self.inner.dead_letters(queue)
        )


class _RecordedSubscription:
    def __init__(self, owner: RecordingTransport, operation: str, address: str,
                 inner: Subscription) -> None:  # fmt: skip
        self._owner, self._operation, self._address, self._inner = owner, operation, address, inner

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._deliveries()

    async def _deliveries(self) -> AsyncIterator[Delivery]:
        async for delivery in self._inner:
            note = (
                f"{self._operation} notice={delivery.notice}"
                if delivery.notice
                else self._operation
            )
            self._owner._record("received", note, self._address, delivery.body)  # noqa: SLF001
            yield delivery

    async def aclose(self) -> None:
        await self._inner.aclose()


class _RecordedConsumer:
    def __init__(self, owner: RecordingTransport, address: str, inner: Consumer) -> None:
        self._owner, self._address, self._inner = owner, address, inner

    def __aiter__(self) -> AsyncIterator[Job]:
        return self._jobs()

    async def _jobs(self) -> AsyncIterator[Job]:
        async for job in self._inner:
            self._owner._record("received", "consume", self._address, job.body)  # noqa: SLF001
            yield job

    async def aclose(self) -> None:
        await self._inner.aclose()
