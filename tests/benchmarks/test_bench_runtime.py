"""Runtime throughput on the memory transport, next to a raw anyio echo in the same run.

Each benchmark round runs a fresh event loop with a batch of round trips, so the figures are
per batch; divide by the batch size for one round trip. The raw baseline is an anyio memory
object stream echo: the least an in-process request-response can cost (for streams and events,
bytes through one memory object stream). Measure with::

    pytest tests/benchmarks/test_bench_runtime.py --benchmark-enable --benchmark-only

and read the ratio llmproto / raw per group (the suite's performance section reports the same
figures, issue 'Conformance kit').
"""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from llmproto_ref import Client, Event, Final, MemoryTransport, Request, Service

BATCH = 256
IN_FLIGHT = 64
JOBS_IN_FLIGHT = 16
CHUNKS = 256
EVENTS = 256
PAYLOAD = {"city": "Paris", "units": "metric", "note": "x" * 150}  # ~200 bytes of JSON

_names = itertools.count()


async def _raw_echo(in_flight: int) -> None:
    """Raw anyio: each request is bytes on a stream, echoed back on the caller's own stream."""
    send_req, receive_req = anyio.create_memory_object_stream[Any](math.inf)

    async def server() -> None:
        async with receive_req:
            async for body, reply in receive_req:
                reply.send_nowait(body)

    async def caller(count: int) -> None:
        reply_send, reply_receive = anyio.create_memory_object_stream[bytes](math.inf)
        async with reply_send, reply_receive:
            for _ in range(count):
                send_req.send_nowait((b"x" * 200, reply_send))
                await reply_receive.receive()

    async with anyio.create_task_group() as tg:
        tg.start_soon(server)
        async with anyio.create_task_group() as callers:
            for _ in range(in_flight):
                callers.start_soon(caller, BATCH // in_flight)
        send_req.close()


async def _llmproto_rr(in_flight: int) -> None:
    name = f"bench-rr-{next(_names)}"
    async with MemoryTransport(name) as server_side, MemoryTransport(name) as client_side:
        service = Service(server_side, name="bench")

        @service.handler("weather.get")
        async def weather(request: Request) -> Any:
            return request.data

        async with service, Client(client_side, source="llmp://bench") as client:

            async def caller(count: int) -> None:
                for _ in range(count):
                    await client.request("weather.get", PAYLOAD)

            async with anyio.create_task_group() as callers:
                for _ in range(in_flight):
                    callers.start_soon(caller, BATCH // in_flight)


async def _raw_stream() -> None:
    send, receive = anyio.create_memory_object_stream[bytes](math.inf)

    async def producer() -> None:
        async with send:
            for _ in range(CHUNKS):
                await anyio.lowlevel.checkpoint()
                send.send_nowait(b'{"delta":"token"}')

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        async with receive:
            async for _ in receive:
                pass


async def _llmproto_stream() -> None:
    name = f"bench-stream-{next(_names)}"
    async with MemoryTransport(name) as server_side, MemoryTransport(name) as client_side:
        service = Service(server_side, name="bench")

        @service.handler("llm.chat")
        async def chat(request: Request) -> AsyncIterator[Any]:
            for _ in range(CHUNKS):
                yield {"delta": "token"}
            yield Final(finish_reason="stop")

        async with (
            service,
            Client(client_side, source="llmp://bench") as client,
            client.stream("llm.chat", PAYLOAD) as stream,
        ):
            async for _ in stream:
                pass


async def _raw_events() -> None:
    """Raw anyio: events as bytes through one memory stream to one subscriber task."""
    send, receive = anyio.create_memory_object_stream[bytes](math.inf)

    async def subscriber() -> None:
        async with receive:
            async for _ in receive:
                pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(subscriber)
        async with send:
            for _ in range(EVENTS):
                await anyio.lowlevel.checkpoint()
                send.send_nowait(b"x" * 200)


async def _llmproto_events() -> None:
    name = f"bench-events-{next(_names)}"
    async with MemoryTransport(name) as server_side, MemoryTransport(name) as client_side:
        service = Service(server_side, name="bench")
        handled = 0
        all_handled = anyio.Event()

        @service.on_event("weather.changed")
        async def changed(event: Event) -> None:
            nonlocal handled
            handled += 1
            if handled == EVENTS:
                all_handled.set()

        async with service, Client(client_side, source="llmp://bench") as client:
            for _ in range(EVENTS):
                await client.publish("weather.changed", PAYLOAD)
            await all_handled.wait()


async def _llmproto_jobs(in_flight: int) -> None:
    name = f"bench-jobs-{next(_names)}"
    async with MemoryTransport(name) as server_side, MemoryTransport(name) as client_side:
        service = Service(server_side, name="bench")

        @service.worker("bench-jobs", concurrency=in_flight)
        async def work(request: Request) -> Any:
            return request.data

        async with service, Client(client_side, source="llmp://bench") as client:

            async def submitter(count: int) -> None:
                for _ in range(count):
                    job = await client.submit("bench-jobs", "weather.get", PAYLOAD)
                    await job.result()

            async with anyio.create_task_group() as submitters:
                for _ in range(in_flight):
                    submitters.start_soon(submitter, BATCH // in_flight)


def _run(benchmark: Any, job: Callable[[], Awaitable[None]]) -> None:
    benchmark.pedantic(lambda: anyio.run(job), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="request-response, 1 in flight (256 round trips)")
def test_raw_anyio_echo_1(benchmark: Any) -> None:
    """Raw anyio echo, one request at a time."""
    _run(benchmark, lambda: _raw_echo(1))


@pytest.mark.benchmark(group="request-response, 1 in flight (256 round trips)")
def test_llmproto_request_1(benchmark: Any) -> None:
    """Client.request to a Service on memory://, one at a time."""
    _run(benchmark, lambda: _llmproto_rr(1))


@pytest.mark.benchmark(group="request-response, 64 in flight (256 round trips)")
def test_raw_anyio_echo_64(benchmark: Any) -> None:
    """Raw anyio echo, 64 callers at once."""
    _run(benchmark, lambda: _raw_echo(IN_FLIGHT))


@pytest.mark.benchmark(group="request-response, 64 in flight (256 round trips)")
def test_llmproto_request_64(benchmark: Any) -> None:
    """Client.request to a Service on memory://, 64 callers at once."""
    _run(benchmark, lambda: _llmproto_rr(IN_FLIGHT))


@pytest.mark.benchmark(group="stream (256 chunks)")
def test_raw_anyio_stream(benchmark: Any) -> None:
    """Raw anyio: 256 chunks through one memory stream."""
    _run(benchmark, _raw_stream)


@pytest.mark.benchmark(group="stream (256 chunks)")
def test_llmproto_stream(benchmark: Any) -> None:
    """Client.stream of 256 chunks from a Service on memory://."""
    _run(benchmark, _llmproto_stream)


@pytest.mark.benchmark(group="events (256 published and handled)")
def test_raw_anyio_events(benchmark: Any) -> None:
    """Raw anyio: 256 events through one memory stream."""
    _run(benchmark, _raw_events)


@pytest.mark.benchmark(group="events (256 published and handled)")
def test_llmproto_events(benchmark: Any) -> None:
    """Client.publish of 256 events to a Service's event handler on memory://."""
    _run(benchmark, _llmproto_events)


@pytest.mark.benchmark(group="work queue, 16 in flight (256 jobs)")
def test_raw_anyio_echo_16(benchmark: Any) -> None:
    """Raw anyio echo, 16 callers at once (the queue group's baseline)."""
    _run(benchmark, lambda: _raw_echo(JOBS_IN_FLIGHT))


@pytest.mark.benchmark(group="work queue, 16 in flight (256 jobs)")
def test_llmproto_jobs_16(benchmark: Any) -> None:
    """Client.submit and JobHandle.result against a 16-job worker on memory://."""
    _run(benchmark, lambda: _llmproto_jobs(JOBS_IN_FLIGHT))
