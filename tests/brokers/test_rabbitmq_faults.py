"""The RabbitMQ transport under faults: connections closed by the broker, long handlers.

Faults are made with ``rabbitmqctl close_connection`` on this test's own connections only,
found by their ``connection_name`` in ``rabbitmqctl list_connections pid client_properties``:
other people's tests share the broker. Each test deletes the durable queues it declared.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import aiormq
import aiormq.exceptions
import anyio
import pytest

from llmproto_rabbitmq import RabbitMQTransport, dead_letter_queue, serve_queue, work_queue
from llmproto_ref import (
    Client,
    ErrorCode,
    ExchangeError,
    Job,
    LlmpError,
    QueueOptions,
    Request,
    Service,
)

pytestmark = pytest.mark.anyio

_PID = re.compile(r"^(<[^>]+>)\t(.*)$")


# -- helpers ---------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> str:
    command = shutil.which("rabbitmqctl")
    if command is None:
        pytest.skip("rabbitmqctl is not installed: the fault tests close connections with it")
    done = subprocess.run(
        [command, "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[:200]}")
    return done.stdout


def _close_connections(names: Iterable[str]) -> int:
    """Force-close the broker connections named ``names`` (ours only); how many were closed."""
    wanted = {f'{{"connection_name","{name}"}}' for name in names}
    closed = 0
    for line in _rabbitmqctl("list_connections", "pid", "client_properties").splitlines():
        match = _PID.match(line)
        if match and any(w in match.group(2) for w in wanted):
            _rabbitmqctl("close_connection", match.group(1), "llmproto fault test")
            closed += 1
    return closed


async def _drop(*transports: RabbitMQTransport) -> None:
    """Close these transports' connections at the broker and wait until they reconnected."""
    before = [t.reconnects for t in transports]
    closed = await anyio.to_thread.run_sync(
        _close_connections, [t.connection_name for t in transports]
    )
    assert closed == len(transports)
    with anyio.fail_after(10):
        while any(t.reconnects == b for t, b in zip(transports, before, strict=True)):
            await anyio.sleep(0.02)


async def _consumers(url: str, name: str) -> int | None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        try:
            ok = await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return int(ok.consumer_count or 0)
    finally:
        await connection.close()


async def _eventually(probe: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> bool:
    with anyio.move_on_after(timeout_s):
        while not await probe():
            await anyio.sleep(0.05)
        return True
    return False


async def _delete_queues(url: str, names: Iterable[str]) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


@asynccontextmanager
async def _transport(url: str, query: str = "") -> AsyncIterator[RabbitMQTransport]:
    async with RabbitMQTransport.from_url(f"{url}?{query}" if query else url) as transport:
        yield transport


@pytest.fixture
def work(amqp_url: str, run_id: str) -> Iterable[str]:
    """A work queue name for this test; its queues are deleted afterwards."""
    name = f"{run_id}.jobs"
    yield name
    delays = [  # the worker's retries and put-backs park jobs in delay queues
        queue
        for queue in _rabbitmqctl("list_queues", "name").split()
        if queue.startswith(("llmp.wq-delay:", "llmp.dlq-delay:")) and queue.endswith(f":{name}")
    ]
    anyio.run(
        _delete_queues,
        amqp_url,
        [work_queue(name), dead_letter_queue(name), *delays],
        backend="asyncio",
    )


# -- reconnecting ----------------------------------------------------------------------------


async def test_subscriptions_and_consumers_come_back(amqp_url: str, run_id: str, work: str) -> None:
    """After a forced close, queues have their consumers again, the inbox keeps its address,
    and requests, events and jobs flow [AMQP-026, AMQP-012]."""
    async with _transport(amqp_url) as server, _transport(amqp_url) as client:
        requests = await server.serve(f"{run_id}.echo", group="svc")
        events = await server.subscribe_events(f"{run_id}.evt.*")
        jobs = await server.consume(work, QueueOptions(prefetch=4, lease_ms=5000))
        inbox = await client.open_inbox()
        await _drop(server, client)
        rpc = serve_queue("svc", f"{run_id}.echo")
        assert await _eventually(lambda: _has_consumers(amqp_url, rpc))
        assert await _eventually(lambda: _has_consumers(amqp_url, work_queue(work)))
        with anyio.fail_after(10):
            await client.send_request(
                f"{run_id}.echo", b"ping", reply_to=inbox.address, message_id="m1"
            )
            request = await anext(aiter(requests))
            assert inbox.address == request.reply_to
            await server.send_reply(request.reply_to or "", b"pong")
            assert b"pong" == (await anext(aiter(inbox.subscription))).body
            await client.publish_event(f"{run_id}.evt.a", b"event")
            assert b"event" == (await anext(aiter(events))).body
            await client.enqueue(work, b"job", message_id="j1")
            job = await anext(aiter(jobs))
            await job.ack()


async def _has_consumers(url: str, name: str) -> bool:
    return bool(await _consumers(url, name))


async def test_a_settle_from_before_the_drop_neither_raises_nor_hangs(
    amqp_url: str, work: str
) -> None:
    """The old delivery's settles are no-ops; the broker delivers the job again [AMQP-026]."""
    async with _transport(amqp_url) as t:
        jobs = await t.consume(work, QueueOptions(prefetch=2, lease_ms=10_000, max_deliveries=5))
        await t.enqueue(work, b"held", message_id="m1")
        with anyio.fail_after(5):
            old = await anext(aiter(jobs))
        await _drop(t)
        with anyio.fail_after(1):
            await old.extend_lease()
            await old.ack()
            await old.nack(delay_ms=10)
            await old.terminate(reason="stale")
        with anyio.fail_after(10):
            again = await anext(aiter(jobs))
        assert (b"held", 2) == (again.body, again.delivery_count)
        await again.ack()
        assert 4 <= t.stats.stale_settles


async def test_a_request_in_flight_ends_in_bounded_time(amqp_url: str, run_id: str) -> None:
    """A call whose connection drops ends with its reply or a registry error, by its
    deadline [AMQP-026]."""
    type_ = f"{run_id}.slow"
    async with _transport(amqp_url) as server_t, _transport(amqp_url) as client_t:
        service = Service(server_t, name=f"{run_id}-svc")

        @service.handler(type_)
        async def slow(request: Request) -> Any:
            await anyio.sleep(0.5)
            return "done"

        async with service, Client(client_t, source="llmp://fault-test", timeout=3.0) as client:
            outcome: list[object] = []

            async def call() -> None:
                try:
                    outcome.append((await client.request(type_, None)).data)
                except LlmpError as exc:
                    outcome.append(exc.code)

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(0.1)
                await _drop(client_t)
            assert time.monotonic() - started < 4.0
            assert outcome[0] in ("done", ErrorCode.DEADLINE_EXCEEDED, ErrorCode.UNAVAILABLE)
            after = await client.request(type_, None)  # the inbox works again
            assert "done" == after.data


async def test_long_handlers_do_not_starve_heartbeats(amqp_url: str, work: str) -> None:
    """Heartbeats every half second keep flowing through a 3 s blocking job run in a thread
    and a 3 s asynchronous one: no reconnect, one delivery each [AMQP-027]."""
    async with _transport(amqp_url, "heartbeat=1") as t:
        service = Service(t, name="heartbeat-test")
        deliveries: list[int] = []

        @service.worker(work, concurrency=2, options=QueueOptions(prefetch=2, lease_ms=1500))
        async def long_job(request: Request) -> Any:
            deliveries.append(request.delivery_count)
            if request.data == "blocking":
                await anyio.to_thread.run_sync(time.sleep, 3.0)
            else:
                await anyio.sleep(3.0)

        async with service, Client(t, source="llmp://heartbeat-test") as client:
            handles = [
                await client.submit(work, "long.job", kind, timeout=10)
                for kind in ("blocking", "async")
            ]
            with anyio.fail_after(10):
                for handle in handles:
                    await handle.result()
        assert [1, 1] == deliveries
        assert 0 == t.reconnects


# -- the fault run ---------------------------------------------------------------------------

_JOBS = 2000


async def test_two_thousand_jobs_survive_forced_closes(
    amqp_url: str, run_id: str, work: str
) -> None:
    """2,000 jobs with idempotency keys while both connections are closed three times: every
    job runs exactly once, consumers come back, and a poison job ends in the dead letters
    with its reason after its last delivery [AMQP-026, AMQP-022, AMQP-017]."""
    executions: Counter[int] = Counter()
    poison_deliveries: list[int] = []
    options = QueueOptions(prefetch=32, lease_ms=5000, max_deliveries=3)
    async with _transport(amqp_url) as worker_t, _transport(amqp_url) as producer_t:
        service = Service(worker_t, name=f"{run_id}-worker")

        @service.worker(work, concurrency=32, options=options)
        async def run(request: Request) -> Any:
            if request.data == "poison":
                poison_deliveries.append(request.delivery_count)
                raise ExchangeError(ErrorCode.UNAVAILABLE, "poison", retryable=True)
            await anyio.sleep(0.12)  # 32 at once: about 260 jobs/s, so the faults hit the run
            executions[int(request.data)] += 1

        async with service, Client(producer_t, source="llmp://fault-producer") as client:

            async def submit(data: object, key: str) -> None:
                while True:  # an UNAVAILABLE enqueue may or may not be stored: send it again
                    try:
                        await client.submit(work, "fault.job", data, idempotency_key=key,
                                            result=False)  # fmt: skip
                        return
                    except ExchangeError as exc:
                        if exc.code != ErrorCode.UNAVAILABLE:
                            raise
                        await anyio.sleep(0.02)

            async def produce(first: int) -> None:
                for n in range(first, _JOBS, 8):
                    await submit(n, f"{run_id}-{n}")

            async def faults() -> None:
                for _ in range(3):
                    await anyio.sleep(0.3)
                    await _drop(worker_t, producer_t)
                    assert len(executions) < _JOBS, "the run ended before the faults"

            with anyio.fail_after(50):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(faults)
                    await submit("poison", f"{run_id}-poison")
                    for first in range(8):
                        tg.start_soon(produce, first)
                while len(executions) < _JOBS:
                    await anyio.sleep(0.05)
            assert 3 == worker_t.reconnects == producer_t.reconnects
            await anyio.sleep(1.0)  # anything delivered again would run now
            dead = await worker_t.dead_letters(work)
            with anyio.fail_after(10):
                letter: Job = await anext(aiter(dead))
            await letter.ack()
            assert await _has_consumers(amqp_url, work_queue(work))
    assert set(range(_JOBS)) == set(executions)
    assert [] == [n for n, runs in executions.items() if runs != 1]
    assert "terminated: max_deliveries" == letter.reason
    assert poison_deliveries
    assert poison_deliveries[-1] >= options.max_deliveries
