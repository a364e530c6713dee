"""The synchronous client from plain threads, on a shared portal and on its own portal."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from llmproto_ref import (
    ErrorCode,
    Event,
    ExchangeError,
    MemoryBroker,
    MemoryTransport,
    Request,
    Service,
    SyncClient,
)

WAIT = 3.0
SOURCE = "llmp://tests/sync-client"


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect each test's garbage inside the test, so a leak fails the test that made it."""
    yield
    gc.collect()


class _Handlers:
    """A service's handlers and what they observed (read from the test's threads)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.stopped = False
        self.release: anyio.Event | None = None

    def register(self, service: Service) -> None:
        @service.handler("t.echo")
        async def echo(request: Request) -> Any:
            await anyio.sleep(0.01)
            return {"echo": request.data}

        @service.handler("t.refuse")
        async def refuse(request: Request) -> Any:
            raise ExchangeError(ErrorCode.PERMISSION_DENIED, "not you", retry_after_ms=5)

        @service.handler("t.count")
        async def count(request: Request) -> AsyncIterator[Any]:
            for n in range(request.data):
                yield n

        @service.handler("t.endless")
        async def endless(request: Request) -> AsyncIterator[Any]:
            yield "first"
            yield "second"
            try:
                await anyio.sleep(10)
            finally:
                self.stopped = True
            yield "never"

        @service.on_event("e.sync.>")
        async def on_event(event: Event) -> None:
            self.events.append(event.data)

        @service.worker("sync-jobs")
        async def work(request: Request) -> Any:
            if request.data == "wait":
                self.release = anyio.Event()
                await self.release.wait()
            return {"job": request.data}


def _until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Block this plain thread until ``predicate()`` holds (fail after ``timeout``)."""
    give_up = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < give_up, "condition never held"
        time.sleep(0.005)


def _start_service(
    portal: BlockingPortal, stack: ExitStack, name: str, handlers: _Handlers
) -> Service:
    transport = MemoryTransport(name)
    stack.enter_context(portal.wrap_async_context_manager(transport))
    service = Service(transport, name="sync-svc", grace=0.2)
    handlers.register(service)
    stack.enter_context(portal.wrap_async_context_manager(service))
    return service


@contextmanager
def _sync_pair(backend: str, *, private: bool) -> Iterator[tuple[SyncClient, _Handlers]]:
    """A SyncClient and a running service, on one shared portal or on the client's own."""
    name = f"t-sync-{time.monotonic_ns()}"
    handlers = _Handlers()
    try:
        with ExitStack() as stack:
            if private:
                client = SyncClient(
                    MemoryTransport(name), source=SOURCE, timeout=WAIT, backend=backend
                )
                stack.enter_context(client)
                # SyncClient has no public accessor for its own portal (reported to the lead)
                portal = client._portal  # noqa: SLF001
                assert portal is not None
                _start_service(portal, stack, name, handlers)
            else:
                portal = stack.enter_context(start_blocking_portal(backend))
                _start_service(portal, stack, name, handlers)
                transport = MemoryTransport(name)
                stack.enter_context(portal.wrap_async_context_manager(transport))
                client = SyncClient(transport, source=SOURCE, timeout=WAIT, portal=portal)
                stack.enter_context(client)
            yield client, handlers
    finally:
        MemoryBroker.reset(name)


PORTALS = [pytest.param(False, id="shared-portal"), pytest.param(True, id="private-portal")]


@pytest.mark.parametrize("private", PORTALS)
def test_requests_from_several_threads_at_once(anyio_backend: str, private: bool) -> None:
    """Four plain threads calling one SyncClient each get their own answers.

    Requirements: SYNC-002.
    """
    with _sync_pair(anyio_backend, private=private) as (client, _):

        def calls(thread: int) -> list[Any]:
            return [client.request("t.echo", [thread, n]).data for n in range(5)]

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(calls, range(4)))
        figures = client.metrics.snapshot()["sync"]["t.echo"]
    assert [[{"echo": [t, n]} for n in range(5)] for t in range(4)] == results
    assert (20, 20) == (figures["sent"], figures["succeeded"])


@pytest.mark.parametrize("private", PORTALS)
def test_errors_raise_exchange_error(anyio_backend: str, private: bool) -> None:
    """An error reply, and nobody serving the type, raise ExchangeError in the calling thread.

    Requirements: SYNC-002.
    """
    with _sync_pair(anyio_backend, private=private) as (client, _):
        with pytest.raises(ExchangeError) as refused:
            client.request("t.refuse")
        with pytest.raises(ExchangeError) as nobody:
            client.request("t.nobody")
    assert (ErrorCode.PERMISSION_DENIED, "not you", 5) == (
        refused.value.code,
        refused.value.message,
        refused.value.retry_after_ms,
    )
    assert ErrorCode.NO_RESPONDERS == nobody.value.code


@pytest.mark.parametrize("private", PORTALS)
def test_stream_iterates_and_gives_result(anyio_backend: str, private: bool) -> None:
    """A blocking stream yields its chunks in order and then holds the final chunk."""
    with (
        _sync_pair(anyio_backend, private=private) as (client, _),
        client.stream("t.count", 4) as stream,
    ):
        chunks = [(chunk.seq, chunk.data) for chunk in stream]
    assert [(0, 0), (1, 1), (2, 2), (3, 3)] == chunks
    assert stream.result is not None
    assert (4, True, "stop") == (
        stream.result.seq,
        stream.result.final,
        stream.result.finish_reason,
    )


@pytest.mark.parametrize("private", PORTALS)
def test_stream_cancel_stops_the_handler(anyio_backend: str, private: bool) -> None:
    """Cancelling a blocking stream stops the service's handler.

    Requirements: SYNC-002.
    """
    with _sync_pair(anyio_backend, private=private) as (client, handlers):
        with client.stream("t.endless") as stream:
            chunks = iter(stream)
            assert ["first", "second"] == [next(chunks).data, next(chunks).data]
            assert stream.cancel()
            assert not stream.cancel()
            with pytest.raises(ExchangeError) as caught:
                next(chunks)
        _until(lambda: handlers.stopped)
    assert ErrorCode.CANCELLED == caught.value.code
    assert stream.result is None


@pytest.mark.parametrize("private", PORTALS)
def test_publish_reaches_the_event_handler(anyio_backend: str, private: bool) -> None:
    """Events published from a thread are handled by the service."""
    with _sync_pair(anyio_backend, private=private) as (client, handlers):
        sent = [client.publish("e.sync.note", n) for n in range(3)]
        _until(lambda: len(handlers.events) == 3)
    assert [0, 1, 2] == sorted(handlers.events)
    assert {"event"} == {str(envelope.kind) for envelope in sent}


@pytest.mark.parametrize("private", PORTALS)
def test_submit_result_and_cancel(anyio_backend: str, private: bool) -> None:
    """A job's result arrives through the handle; cancelling an open one ends it CANCELLED."""
    with _sync_pair(anyio_backend, private=private) as (client, handlers):
        assert {"job": "now"} == client.submit("sync-jobs", "t.job", "now").result().data
        waiting = client.submit("sync-jobs", "t.job", "wait")
        _until(lambda: handlers.release is not None)
        assert client.cancel(waiting.id)
        assert not client.cancel(waiting.id)
        with pytest.raises(ExchangeError) as caught:
            waiting.result()
        release = handlers.release
        assert release is not None
        portal = client._portal  # noqa: SLF001 - no public accessor (reported)
        assert portal is not None
        portal.call(release.set)  # let the worker finish
    assert ErrorCode.CANCELLED == caught.value.code
