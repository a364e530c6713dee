"""JetStream work queues across a restart of a private nats-server (brokers.private_nats).

The companion of test_nats_faults.py for two narrower questions: does the stream's duplicate
window still drop a repeated enqueue after a ``kill -9``, and does a waiting consumer ask for
jobs again as soon as its connection is back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from brokers.private_nats import PrivateNats, crash, eventually
from llmproto_nats import NatsTransport
from llmproto_nats._jetstream import stream_name
from llmproto_ref import QueueOptions

pytestmark = pytest.mark.anyio

LEASE_MS = 2_000
URL_OPTIONS = {"reconnect_wait_ms": 100, "request_timeout_ms": 2_000, "connect_timeout_ms": 1_000}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[PrivateNats]:
    """A private nats-server with JetStream, stopped at teardown whatever happened."""
    with PrivateNats.started(tmp_path) as server:
        yield server


@contextlib.asynccontextmanager
async def connected(server: PrivateNats) -> AsyncIterator[NatsTransport]:
    """An open NATS transport on the private server."""
    async with NatsTransport.from_url(server.url_with(**URL_OPTIONS)) as transport:
        yield transport


async def test_a_repeated_enqueue_after_a_crash_stores_nothing(
    nats_server: PrivateNats, run_id: str
) -> None:
    """The duplicate window survives a kill -9: a repeat is a success that stores nothing.

    An enqueue whose PubAck was lost may be repeated with the same message id [NATS-032];
    the stream drops it by ``Nats-Msg-Id`` [NATS-022, TRN-012], the PubAck says duplicate and
    the binding reports success [NATS-023], and the one job is delivered once.
    """
    queue = f"{run_id}.dedup"
    async with connected(nats_server) as transport:
        await transport.enqueue(queue, b'{"job":1}', message_id="job-1")
        await crash(nats_server, transport, outage_s=1.0)
        with anyio.fail_after(10):
            await transport.enqueue(queue, b'{"job":1}', message_id="job-1")  # the repeat
            stored = await transport.jetstream().stream_info(stream_name(queue))
            assert 1 == stored.state.messages
            consumer = await transport.consume(queue, QueueOptions(prefetch=4, lease_ms=LEASE_MS))
            jobs = []
            async for job in consumer:
                jobs.append((job.body, job.delivery_count))
                await job.ack()
                break
            await consumer.aclose()
    assert [(b'{"job":1}', 1)] == jobs


async def test_a_waiting_consumer_pulls_again_soon_after_a_restart(
    nats_server: PrivateNats, run_id: str
) -> None:
    """A worker waiting for jobs gets one enqueued after the restart within a second [NATS-035].

    A restarted server has forgotten the consumer's outstanding pull requests, so the
    consumer must ask again once the connection is back [NATS-033, NATS-028] rather than
    wait for its own silence timer (a rule proposed for the binding chapter); until it does,
    every job waits.
    """
    queue = f"{run_id}.resume"
    before, after = b'{"job":"before"}', b'{"job":"after"}'
    arrived: dict[bytes, float] = {}  # a lost ack may bring "before" back: at least once
    async with connected(nats_server) as transport:
        consumer = await transport.consume(queue, QueueOptions(prefetch=4, lease_ms=LEASE_MS))

        async def read() -> None:
            async for job in consumer:
                arrived.setdefault(job.body, time.monotonic())
                await job.ack()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await transport.enqueue(queue, before, message_id="before")
                await eventually(lambda: before in arrived, within=5, what="the first job")
                await crash(nats_server, transport, outage_s=0.2)
                enqueued = time.monotonic()
                await transport.enqueue(queue, after, message_id="after")
                await eventually(lambda: after in arrived, within=10, what="the job after")
                tg.cancel_scope.cancel()
            await consumer.aclose()
    took = arrived[after] - enqueued
    assert took < 1.0, f"the job enqueued after the reconnect waited {took:.2f} s"
