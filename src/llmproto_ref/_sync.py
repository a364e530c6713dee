"""The synchronous client: the same calls, blocking, from plain threads (spec/patterns.md).

A :class:`SyncClient` runs an asynchronous :class:`~llmproto_ref.Client` on an event loop
in a background thread (an anyio blocking portal) and waits for each call. Several threads
may share one SyncClient: each call is an independent request on the shared loop.
To talk to an in-process transport that already runs on another loop (``memory://``
services started in a portal), pass that portal.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from llmproto_ref._client import Client, JobHandle, Stream
from llmproto_ref._envelope import Envelope
from llmproto_ref._metrics import Metrics, Pattern
from llmproto_ref._policy import SecurityPolicy
from llmproto_ref._signing import Signer
from llmproto_ref._transport import Transport

__all__ = ("SyncClient", "SyncJobHandle", "SyncStream")


class SyncClient:
    """A blocking client.

    :param transport: a transport (not yet entered; the client enters and leaves it) or, with
        ``portal``, one already entered on that portal's loop (the client does not own it).
    :param source: this client's identity.
    :param portal: run on this portal's loop instead of a private one.
    :param backend: the event loop of a private portal, ``asyncio`` or ``trio``.
    :param signer: signs what the client sends (see :class:`~llmproto_ref.Client`).
    :param bearer_token: the client's own token for ``auth`` of its requests.
    :param security: the policy every reply must pass.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        source: str,
        timeout: float = 30.0,
        portal: BlockingPortal | None = None,
        backend: str = "asyncio",
        signer: Signer | None = None,
        bearer_token: str | Callable[[], str] | None = None,
        security: SecurityPolicy | None = None,
    ) -> None:
        self._transport = transport
        self._source = source
        self._timeout = timeout
        self._signer = signer
        self._bearer_token = bearer_token
        self._security = security
        self._portal = portal
        self._backend = backend
        self._stack = ExitStack()
        self._client: Client | None = None

    def __enter__(self) -> SyncClient:
        stack = self._stack
        if self._portal is None:
            self._portal = stack.enter_context(start_blocking_portal(self._backend))
            stack.enter_context(self._portal.wrap_async_context_manager(self._transport))
        client = Client(
            self._transport,
            source=self._source,
            timeout=self._timeout,
            signer=self._signer,
            bearer_token=self._bearer_token,
            security=self._security,
        )
        self._client = stack.enter_context(self._portal.wrap_async_context_manager(client))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.__exit__(exc_type, exc, tb)
        self._client = None

    def _parts(self) -> tuple[BlockingPortal, Client]:
        if self._portal is None or self._client is None:
            raise RuntimeError("use the SyncClient inside 'with'")
        return self._portal, self._client

    @property
    def portal(self) -> BlockingPortal:
        """The portal whose event loop runs this client (private or the one given)."""
        return self._parts()[0]

    @property
    def metrics(self) -> Metrics:
        """The underlying client's metrics; calls made here count under ``sync``."""
        return self._parts()[1].metrics

    def request(self, type: str, data: Any = None, **options: Any) -> Envelope:
        """Send a request and block until its terminal reply (see Client.request)."""
        portal, client = self._parts()
        return portal.call(
            functools.partial(client.request, type, data, _pattern=Pattern.SYNC, **options)
        )

    def stream(self, type: str, data: Any = None, **options: Any) -> SyncStream:
        """A streamed request; use ``with`` and iterate it."""
        portal, client = self._parts()
        return SyncStream(portal, client.stream(type, data, **options))

    def publish(self, type: str, data: Any = None, **members: Any) -> Envelope:
        """Publish an event."""
        portal, client = self._parts()
        return portal.call(functools.partial(client.publish, type, data, **members))

    def submit(
        self,
        queue: str,
        type: str,
        data: Any = None,
        **options: Any,
    ) -> SyncJobHandle:
        """Put a job on a work queue; returns once the broker confirmed it."""
        portal, client = self._parts()
        handle = portal.call(functools.partial(client.submit, queue, type, data, **options))
        return SyncJobHandle(portal, handle)

    def cancel(self, request_id: str) -> bool:
        """Cancel an open exchange."""
        portal, client = self._parts()
        return portal.call(client.cancel, request_id)


class SyncStream(AbstractContextManager["SyncStream"]):
    """A blocking view of a :class:`~llmproto_ref.Stream`."""

    def __init__(self, portal: BlockingPortal, stream: Stream) -> None:
        self._portal = portal
        self._stream = stream
        self._cm = portal.wrap_async_context_manager(stream)

    def __enter__(self) -> SyncStream:
        self._cm.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cm.__exit__(exc_type, exc, tb)

    @property
    def result(self) -> Envelope | None:
        """The terminal envelope once the stream completed."""
        return self._stream.result

    def cancel(self) -> bool:
        """Stop the stream."""
        return self._portal.call(self._stream.cancel)

    def __iter__(self) -> Iterator[Envelope]:
        chunks = self._stream.__aiter__()
        while True:
            try:
                yield self._portal.call(chunks.__anext__)
            except StopAsyncIteration:
                return


class SyncJobHandle:
    """A blocking view of a :class:`~llmproto_ref.JobHandle`."""

    def __init__(self, portal: BlockingPortal, handle: JobHandle) -> None:
        self._portal = portal
        self.handle = handle

    @property
    def id(self) -> str:
        """The job's request id."""
        return self.handle.id

    def result(self) -> Envelope:
        """Block until the worker's reply."""
        return self._portal.call(self.handle.result)
