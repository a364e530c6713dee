"""The synchronous call: the same wire as request-response, blocking, from plain threads."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from llmproto_ref import (
    Client,
    ErrorCode,
    ExchangeError,
    Kind,
    MemoryBroker,
    MemoryTransport,
    Request,
    Service,
    SyncClient,
    decode,
)
from runtime_pair import RecordingTransport

WAIT = 3.0
SOURCE = "llmp://tests/sync-client"


@contextmanager
def _portal_with_service(
    backend: str,
) -> Iterator[tuple[BlockingPortal, ExitStack, str, tuple[threading.Event, threading.Event]]]:
    """A portal running a service for ``t.echo``, ``t.hold`` (until released) and ``t.silent``."""
    name = f"t{uuid.uuid4().hex}"
    started, release = threading.Event(), threading.Event()
    try:
        with start_blocking_portal(backend) as portal, ExitStack() as stack:
            transport = MemoryTransport(name)
            stack.enter_context(portal.wrap_async_context_manager(transport))
            service = Service(transport, name="sync-svc", grace=0.1)

            @service.handler("t.echo")
            async def echo(request: Request) -> Any:
                return {"echo": request.data}

            @service.handler("t.hold", thread=True)
            def hold(request: Request) -> Any:
                started.set()
                release.wait(timeout=WAIT)
                return "held"

            stack.enter_context(portal.wrap_async_context_manager(service))
            silent = MemoryTransport(name)  # serves t.silent and never answers
            stack.enter_context(portal.wrap_async_context_manager(silent))
            portal.call(functools.partial(silent.serve, "t.silent", group="silent"))
            stack.callback(release.set)
            yield portal, stack, name, (started, release)
    finally:
        MemoryBroker.reset(name)


def test_a_blocking_call_sends_what_an_asynchronous_call_sends(anyio_backend: str) -> None:
    """SyncClient's request has the members an async Client's has; the reply is the response.

    Requirements: SYNC-001.
    """
    with _portal_with_service(anyio_backend) as (portal, stack, name, _):
        sync_transport, async_transport = RecordingTransport(name), RecordingTransport(name)
        for transport in (sync_transport, async_transport):
            stack.enter_context(portal.wrap_async_context_manager(transport))
        sync = stack.enter_context(
            SyncClient(sync_transport, source=SOURCE, timeout=WAIT, portal=portal)
        )
        client = stack.enter_context(
            portal.wrap_async_context_manager(Client(async_transport, source=SOURCE, timeout=WAIT))
        )
        sync_reply = sync.request("t.echo", {"n": 1})
        async_reply = portal.call(client.request, "t.echo", {"n": 1})
    (sync_sent,), (async_sent,) = sync_transport.sent_requests(), async_transport.sent_requests()
    assert sorted(async_sent.members) == sorted(sync_sent.members)
    assert (Kind.REQUEST, sync_transport.inboxes[0], True) == (
        sync_sent.kind,
        sync_sent.reply_to,
        sync_sent.deadline is not None,
    )
    assert [(Kind.RESPONSE, sync_sent.id, {"echo": {"n": 1}})] == [
        (e.kind, e.correlation_id, e.data) for e in map(decode, sync_transport.received)
    ]
    assert (sync_reply.kind, sync_reply.data) == (async_reply.kind, async_reply.data)


def test_a_blocking_call_does_not_block_past_its_deadline(anyio_backend: str) -> None:
    """A call nobody answers raises DEADLINE_EXCEEDED at its deadline, not later.

    Requirements: SYNC-002.
    """
    with _portal_with_service(anyio_backend) as (portal, stack, name, _):
        sync = _entered_sync_client(portal, stack, name)
        started = time.monotonic()
        with pytest.raises(ExchangeError) as caught:
            sync.request("t.silent", timeout=0.3)
        elapsed = time.monotonic() - started
    assert ErrorCode.DEADLINE_EXCEEDED == caught.value.code
    assert 0.29 <= elapsed < 1.0


def _entered_sync_client(portal: BlockingPortal, stack: ExitStack, name: str) -> SyncClient:
    """A SyncClient on ``portal`` with its own entered transport on broker ``name``."""
    transport = MemoryTransport(name)
    stack.enter_context(portal.wrap_async_context_manager(transport))
    return stack.enter_context(SyncClient(transport, source=SOURCE, timeout=WAIT, portal=portal))


def test_blocking_calls_from_two_threads_do_not_wait_for_each_other(anyio_backend: str) -> None:
    """While one thread's call waits for its handler, another thread's call completes.

    Requirements: SYNC-003.
    """
    with _portal_with_service(anyio_backend) as (portal, stack, name, (started, release)):
        sync = _entered_sync_client(portal, stack, name)
        with ThreadPoolExecutor(max_workers=2) as pool:
            held = pool.submit(sync.request, "t.hold")
            assert started.wait(timeout=WAIT)  # the first call is now waiting for its reply
            quick = pool.submit(sync.request, "t.echo", "quick")
            assert {"echo": "quick"} == quick.result(timeout=WAIT).data
            assert not held.done()  # still waiting: the quick call did not queue behind it
            release.set()
            assert "held" == held.result(timeout=WAIT).data
