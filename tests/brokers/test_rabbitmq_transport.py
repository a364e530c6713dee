"""The RabbitMQ transport on the machine's broker: topology, routing, replies, work queues.

Each test names everything it declares after ``run_id`` and deletes its durable queues at the
end; group, exclusive and delay queues go away by themselves (auto-delete, exclusive,
``x-expires``). The conformance suite checks the contract itself; these tests check how the
binding fulfils it on RabbitMQ (spec/bindings/amqp.md).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import aiormq
import aiormq.exceptions
import anyio
import pytest

from llmproto_rabbitmq import (
    EXCHANGES,
    RabbitMQTransport,
    dead_letter_queue,
    delay_queue,
    event_queue,
    serve_queue,
    work_queue,
)
from llmproto_ref import (
    Consumer,
    Delivery,
    ErrorCode,
    Job,
    QueueOptions,
    Subscription,
    TransportError,
)

pytestmark = pytest.mark.anyio


# -- helpers (the fault tests have their own copies) ------------------------------------------


@asynccontextmanager
async def _transport(url: str, query: str = "") -> AsyncIterator[RabbitMQTransport]:
    separator = "&" if "?" in url else "?"
    async with RabbitMQTransport.from_url(f"{url}{separator}{query}" if query else url) as t:
        yield t


async def _queue_state(url: str, name: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of queue ``name``, or ``None`` when it does not exist."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        try:
            ok = await channel.queue_declare(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        return int(ok.message_count or 0), int(ok.consumer_count or 0)
    finally:
        await connection.close()


async def _delete_queues(url: str, names: Iterable[str]) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


async def _wait_for(predicate: object, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return True
        await anyio.sleep(0.05)
    return False


def _rabbitmqctl(*args: str) -> str:
    command = shutil.which("rabbitmqctl")
    if command is None:
        pytest.skip("rabbitmqctl is not installed")
    done = subprocess.run(
        [command, "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[:200]}")
    return done.stdout


async def _take(source: Consumer, timeout_s: float = 5.0) -> Job:
    with anyio.fail_after(timeout_s):
        return await anext(aiter(source))


async def _next(source: Subscription, timeout_s: float = 5.0) -> Delivery:
    with anyio.fail_after(timeout_s):
        return await anext(aiter(source))


@pytest.fixture
def work(amqp_url: str, run_id: str) -> Iterable[str]:
    """A work queue name for this test; its queues are deleted afterwards."""
    name = f"{run_id}.jobs"
    yield name
    anyio.run(
        _delete_queues,
        amqp_url,
        [work_queue(name), dead_letter_queue(name)],
        backend="asyncio",
    )


# -- topology ----------------------------------------------------------------------------------


async def test_the_exchanges_exist_with_their_types(amqp_url: str) -> None:
    """Declared durable with their types; a redeclaration with them is accepted [AMQP-001]."""
    async with _transport(amqp_url):
        connection = await aiormq.connect(amqp_url)
        try:
            channel = await connection.channel()
            for name, kind in EXCHANGES.items():
                await channel.exchange_declare(name, exchange_type=kind, durable=True)
        finally:
            await connection.close()


async def test_a_group_shares_one_auto_deleted_queue(amqp_url: str, run_id: str) -> None:
    """Two members of a group consume one queue, gone when they leave [AMQP-005, AMQP-002]."""
    pattern = f"{run_id}.svc.*"
    name = serve_queue("svc", pattern)
    async with _transport(amqp_url) as t1, _transport(amqp_url) as t2:
        first = await t1.serve(pattern, group="svc")
        second = await t2.serve(pattern, group="svc")
        assert (0, 2) == await _queue_state(amqp_url, name)
        inbox = await t1.open_inbox()
        await t1.send_request(f"{run_id}.svc.get", b"q", reply_to=inbox.address, message_id="m1")
        with anyio.fail_after(5):
            got = await _first_of(first, second)
        assert (b"q", inbox.address, "m1") == (got.body, got.reply_to, got.message_id)
        await first.aclose()
        await second.aclose()
    assert await _wait_for(lambda: _absent(amqp_url, name))


async def _absent(url: str, name: str) -> bool:
    return await _queue_state(url, name) is None


async def _first_of(*subscriptions: Subscription) -> Delivery:
    result: list[Delivery] = []
    async with anyio.create_task_group() as tg:

        async def read(sub: Subscription) -> None:
            result.append(await anext(aiter(sub)))
            tg.cancel_scope.cancel()

        for sub in subscriptions:
            tg.start_soon(read, sub)
    return result[0]


async def test_an_event_group_queue_is_named_after_group_and_pattern(
    amqp_url: str, run_id: str
) -> None:
    """``llmp.evt:<group>:<pattern>``; a final ``>`` does not match zero words [AMQP-004]."""
    pattern = f"{run_id}.lamp.>"
    async with _transport(amqp_url) as t:
        events = await t.subscribe_events(pattern, group="audit")
        assert (0, 1) == await _queue_state(amqp_url, event_queue("audit", pattern))
        await t.publish_event(f"{run_id}.lamp", b"zero words: not for lamp.>")
        await t.publish_event(f"{run_id}.lamp.7.state", b"two words")
        assert b"two words" == (await _next(events)).body
        await events.aclose()


async def test_a_work_queue_is_a_quorum_queue_with_a_dead_letter_exchange(
    amqp_url: str, work: str
) -> None:
    """Quorum queue, DLX llmp.dlx keyed by the queue, a delivery limit [AMQP-006]."""
    async with _transport(amqp_url, "delivery_limit=7") as t:
        await t.enqueue(work, b"job", message_id="m1")
    listing = await anyio.to_thread.run_sync(
        _rabbitmqctl, "list_queues", "name", "type", "arguments"
    )
    rows = {line.split("\t")[0]: line for line in listing.splitlines()}
    row = rows[work_queue(work)]
    assert "\tquorum\t" in row
    assert '{"x-dead-letter-exchange","llmp.dlx"}' in row
    assert f'{{"x-dead-letter-routing-key","{work}"}}' in row
    assert '{"x-delivery-limit",7}' in row
    assert "\tquorum\t" in rows[dead_letter_queue(work)]


async def test_the_connection_is_named(amqp_url: str) -> None:
    """``connection_name`` is ``<name>.<token>``, listed by the broker [AMQP-025]."""
    async with _transport(amqp_url, "name=probe") as t:
        assert t.connection_name.startswith("probe.")
        listing = await anyio.to_thread.run_sync(
            _rabbitmqctl, "list_connections", "client_properties"
        )
        assert f'{{"connection_name","{t.connection_name}"}}' in listing


# -- request-response ------------------------------------------------------------------------


async def test_a_request_nobody_serves_is_no_responders_at_once(amqp_url: str, run_id: str) -> None:
    """The returned request is NO_RESPONDERS from send_request, in well under 100 ms [AMQP-011]."""
    async with _transport(amqp_url) as t:
        inbox = await t.open_inbox()
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            await t.send_request(f"{run_id}.nobody", b"x", reply_to=inbox.address, message_id="m")
        assert ErrorCode.NO_RESPONDERS == caught.value.code
        assert time.monotonic() - started < 0.5


async def test_a_reply_to_a_closed_inbox_is_counted(amqp_url: str) -> None:
    """A returned reply is counted as undeliverable, not raised [AMQP-013, AMQP-012]."""
    async with _transport(amqp_url) as t1, _transport(amqp_url) as t2:
        inbox = await t1.open_inbox()
        await t2.send_reply(inbox.address, b"delivered")
        assert b"delivered" == (await _next(inbox.subscription)).body
        await inbox.subscription.aclose()
        assert await _wait_for(lambda: _absent(amqp_url, inbox.address))
        await t2.send_reply(inbox.address, b"nobody")
        assert 1 == t2.stats.undeliverable


async def test_requests_wait_in_the_queue_beyond_the_prefetch(amqp_url: str, run_id: str) -> None:
    """Manual acks and a prefetch: a service holds ``prefetch`` requests, and what it took is
    acknowledged once the buffer is empty [AMQP-014]."""
    pattern = f"{run_id}.slow"
    async with _transport(amqp_url, "prefetch=2") as server, _transport(amqp_url) as client:
        requests = await server.serve(pattern, group="g")
        for n in range(5):
            await client.send_request(pattern, b"%d" % n, reply_to="", message_id=f"m{n}")
        name = serve_queue("g", pattern)
        assert await _wait_for(lambda: _is(amqp_url, name, (3, 1)))
        assert b"0" == (await _next(requests)).body  # acknowledged with the next: one frame
        assert b"1" == (await _next(requests)).body
        assert await _wait_for(lambda: _is(amqp_url, name, (1, 1)))
        await requests.aclose()


async def _is(url: str, name: str, state: tuple[int, int]) -> bool:
    return await _queue_state(url, name) == state


async def test_a_publishing_channel_the_broker_closed_is_opened_again(
    amqp_url: str, run_id: str
) -> None:
    """A channel-level failure does not end publishing on a live connection [AMQP-026]."""
    async with _transport(amqp_url) as t:
        events = await t.subscribe_events(f"{run_id}.e")
        link = t._link  # noqa: SLF001 - the test closes the channels the broker could close
        for channel in (link._publisher, link._plain):  # noqa: SLF001
            assert channel is not None
            await channel.close()
        await t.publish_event(f"{run_id}.e", b"after")
        assert b"after" == (await _next(events)).body
        with pytest.raises(TransportError) as caught:
            await t.send_request(f"{run_id}.nobody", b"x", reply_to="", message_id="m")
        assert ErrorCode.NO_RESPONDERS == caught.value.code
        assert 0 == t.reconnects


# -- work queues -----------------------------------------------------------------------------


async def test_a_duplicate_reaching_the_same_consumer_is_dropped(amqp_url: str, work: str) -> None:
    """Another transport's repeat of a taken job is acked unseen and counted [AMQP-017]."""
    async with _transport(amqp_url) as worker, _transport(amqp_url) as producer:
        jobs = await worker.consume(work, QueueOptions(prefetch=4, lease_ms=5000))
        await producer.enqueue(work, b"first", message_id="same")
        job = await _take(jobs)
        await job.ack()
        async with _transport(amqp_url) as other:  # its own dedup memory is empty
            await other.enqueue(work, b"repeat", message_id="same")
            await other.enqueue(work, b"next", message_id="other")
        assert b"next" == (await _take(jobs)).body
        assert 1 == worker.stats.duplicates


async def test_a_consumer_takes_credit_only_when_its_worker_asks(amqp_url: str, work: str) -> None:
    """A worker that took one job and asks for no more leaves the rest to others [AMQP-018]."""
    options = QueueOptions(prefetch=8, lease_ms=10_000)
    async with _transport(amqp_url) as t1, _transport(amqp_url) as t2:
        busy = await t1.consume(work, options)
        for n in range(4):
            await t1.enqueue(work, b"%d" % n, message_id=f"m{n}")
        held = await _take(busy)
        free = await t2.consume(work, options)
        others = [await _take(free) for _ in range(3)]
        assert {b"0", b"1", b"2", b"3"} == {held.body, *(j.body for j in others)}
        for job in (held, *others):
            await job.ack()


async def test_readers_waiting_at_once_each_get_credit(amqp_url: str, work: str) -> None:
    """Four readers waiting together hold four jobs ahead, never more [AMQP-018, TRN-014]."""
    async with _transport(amqp_url) as t:
        jobs = await t.consume(work, QueueOptions(prefetch=8, lease_ms=10_000))
        taken: list[Job] = []

        async def reader() -> None:
            taken.append(await _take(jobs))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(reader)
            await anyio.sleep(0.2)  # the readers wait, so the consumer asks for four
            for n in range(6):
                await t.enqueue(work, b"%d" % n, message_id=f"m{n}")
        assert 4 == len(taken)
        assert (6 - 4, 4) == await _queue_state(amqp_url, work_queue(work))  # 4 credits
        for job in taken:
            await job.ack()


async def test_a_lapsed_lease_redelivers_and_counts(amqp_url: str, work: str) -> None:
    """The lease starts at hand-out; lapsed, the job comes back counted 2 [AMQP-019, AMQP-020]."""
    async with _transport(amqp_url) as t:
        jobs = await t.consume(work, QueueOptions(prefetch=2, lease_ms=200, max_deliveries=5))
        await t.enqueue(work, b"slow", message_id="m1")
        first = await _take(jobs)
        started = time.monotonic()
        again = await _take(jobs)
        assert time.monotonic() - started >= 0.19
        assert (1, 2) == (first.delivery_count, again.delivery_count)
        await first.ack()  # stale: changes nothing
        await again.ack()
        assert 1 == t.stats.expired_leases
        assert 1 <= t.stats.stale_settles


async def test_a_delayed_nack_parks_the_job_in_a_delay_queue(amqp_url: str, work: str) -> None:
    """``nack(delay)`` goes through ``llmp.wq-delay:<ms>:<queue>`` and keeps its count
    [AMQP-021, AMQP-020]."""
    async with _transport(amqp_url) as t:
        jobs = await t.consume(work, QueueOptions(prefetch=2, lease_ms=5000, max_deliveries=5))
        await t.enqueue(work, b"retry", message_id="m1")
        job = await _take(jobs)
        await job.nack()
        job = await _take(jobs)
        assert 2 == job.delivery_count
        nacked = time.monotonic()
        await job.nack(delay_ms=350)
        assert await _queue_state(amqp_url, delay_queue(work, 350)) is not None
        back = await _take(jobs)
        assert time.monotonic() - nacked >= 0.34
        assert 3 == back.delivery_count
        await back.ack()
    await _delete_queues(amqp_url, [delay_queue(work, 350)])


async def test_dead_letters_carry_their_reasons(amqp_url: str, work: str) -> None:
    """Terminated and exhausted jobs reach llmp.dlq:<queue> with their reasons
    [AMQP-022, AMQP-023]."""
    async with _transport(amqp_url) as t:
        jobs = await t.consume(work, QueueOptions(prefetch=4, lease_ms=5000, max_deliveries=2))
        dead = await t.dead_letters(work)
        await t.enqueue(work, b"poison", message_id="p")
        await t.enqueue(work, b"refused", message_id="r")
        reasons: dict[bytes, str | None] = {}
        while len(reasons) < 2:
            job = await _take(jobs)
            if job.body == b"refused":
                await job.terminate(reason="bad input")
            else:
                await job.nack()
            if job.body == b"refused" or job.delivery_count == 2:
                letter = await _take(dead)
                reasons[letter.body] = letter.reason
                await letter.ack()
        assert {b"poison": "max_deliveries", b"refused": "terminated: bad input"} == reasons
        assert 2 == t.stats.dead_lettered


async def test_the_brokers_delivery_limit_reads_as_max_deliveries(amqp_url: str, work: str) -> None:
    """Consumers that die holding a job: the broker dead-letters it at ``delivery_limit``
    [AMQP-023, AMQP-006]."""
    async with _transport(amqp_url, "delivery_limit=1") as t:
        await t.enqueue(work, b"crasher", message_id="c")
        for _ in range(2):  # each consumer closes unsettled, like a worker that died
            jobs = await t.consume(work, QueueOptions(prefetch=1, lease_ms=10_000))
            await _take(jobs)
            await jobs.aclose()
        dead = await t.dead_letters(work)
        letter = await _take(dead)
        assert (b"crasher", "max_deliveries") == (letter.body, letter.reason)
        await letter.ack()


async def test_a_job_over_its_limit_on_arrival_is_dead_lettered_unseen(
    amqp_url: str, work: str
) -> None:
    """Its earlier workers died: it is dead-lettered without being handed out [AMQP-022]."""
    async with _transport(amqp_url) as t:
        await t.enqueue(work, b"crasher", message_id="c")
        for _ in range(2):
            jobs = await t.consume(work, QueueOptions(prefetch=1, lease_ms=10_000))
            await _take(jobs)
            await jobs.aclose()
        jobs = await t.consume(work, QueueOptions(prefetch=1, lease_ms=10_000, max_deliveries=2))
        dead = await t.dead_letters(work)
        letter = await _take(dead)
        assert (b"crasher", "max_deliveries") == (letter.body, letter.reason)
        await letter.ack()
        with anyio.move_on_after(0.3):
            await anext(aiter(jobs))
            pytest.fail("a job over its limit was handed out")


async def test_enqueue_is_confirmed_and_persistent(amqp_url: str, work: str) -> None:
    """After enqueue returns, the job is in the queue, even with its producer gone [AMQP-015]."""
    async with _transport(amqp_url) as t:
        for n in range(3):
            await t.enqueue(work, b"%d" % n, message_id=f"m{n}")
    assert (3, 0) == await _queue_state(amqp_url, work_queue(work))


async def test_an_enqueue_to_a_deleted_queue_is_no_responders(amqp_url: str, work: str) -> None:
    """A job no queue takes comes back: NO_RESPONDERS, then the queue is declared again
    [AMQP-011]."""
    async with _transport(amqp_url) as t:
        await t.enqueue(work, b"1", message_id="m1")
        await _delete_queues(amqp_url, [work_queue(work)])
        with pytest.raises(TransportError) as caught:
            await t.enqueue(work, b"2", message_id="m2")
        assert ErrorCode.NO_RESPONDERS == caught.value.code
        await t.enqueue(work, b"3", message_id="m3")
    assert (1, 0) == await _queue_state(amqp_url, work_queue(work))
