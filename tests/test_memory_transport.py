"""The memory transport's semantics: delivery, routing, work queues, limits, lifecycle."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
import pytest

from llmproto_ref._memory import BrokerStats, MemoryBroker, MemoryTransport
from llmproto_ref._registry import ErrorCode
from llmproto_ref._transport import (
    Consumer,
    Delivery,
    Job,
    QueueOptions,
    Subscription,
    Transport,
    TransportError,
)
from llmproto_ref._transport_url import open_transport

T = TypeVar("T")
WAIT = 3.0  # generous bound for something that must happen (noisy 2-core machine)
QUIET = 0.08  # how long we watch for something that must not happen


@pytest.fixture
def broker_name() -> Iterator[str]:
    """A broker name no other test uses, forgotten afterwards."""
    name = f"t{uuid.uuid4().hex}"
    yield name
    MemoryBroker.reset(name)


@pytest.fixture
async def transport(broker_name: str) -> AsyncIterator[MemoryTransport]:
    """An open memory transport on a fresh broker."""
    async with MemoryTransport(broker_name) as t:
        yield t


async def take(source: Subscription | Consumer, timeout: float = WAIT) -> Delivery | Job:
    """The next item of ``source``, failing the test after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        return await source.__aiter__().__anext__()


async def deliver(source: Subscription) -> Delivery:
    """The next delivery of a subscription."""
    item = await take(source)
    assert isinstance(item, Delivery)
    return item


async def job(source: Consumer, timeout: float = WAIT) -> Job:
    """The next job of a consumer."""
    item = await take(source, timeout)
    assert not isinstance(item, Delivery)
    return item


async def nothing(source: Subscription | Consumer, seconds: float = QUIET) -> bool:
    """Whether ``source`` yields nothing for ``seconds``."""
    with anyio.move_on_after(seconds):
        await source.__aiter__().__anext__()
        return False
    return True


async def drain(source: Subscription) -> list[bytes]:
    """Every delivery already buffered (and arriving within a short quiet period)."""
    bodies: list[bytes] = []
    while True:
        with anyio.move_on_after(0.02):
            bodies.append((await deliver(source)).body)
            continue
        return bodies


def options(**changes: int) -> QueueOptions:
    """Queue options with short timers for tests."""
    values = {"prefetch": 16, "lease_ms": 30_000, "max_deliveries": 5} | changes
    return QueueOptions(**values)


# -- delivery and routing ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_publish_returns_before_the_receiver_runs(transport: MemoryTransport) -> None:
    """Delivery is asynchronous: the receiver takes the bytes in its own task, later."""
    sub = await transport.subscribe_events("a.b")
    seen: list[bytes] = []
    got = anyio.Event()

    async def receive() -> None:
        async for delivery in sub:
            seen.append(delivery.body)
            got.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(receive)
        await anyio.sleep(0.02)  # let the other tasks start waiting
        await transport.publish_event("a.b", b"x")
        assert [] == seen
        with anyio.fail_after(WAIT):
            await got.wait()
        assert [b"x"] == seen
        await sub.aclose()


@pytest.mark.anyio
async def test_request_reaches_one_member_of_each_group(transport: MemoryTransport) -> None:
    """A request goes to exactly one member of each matching group, round robin inside one.

    Requirements: TRN-005.
    """
    a1 = await transport.serve("svc.run", group="a")
    a2 = await transport.serve("svc.run", group="a")
    b1 = await transport.serve("svc.*", group="b")
    other = await transport.serve("svc.other", group="c")
    for i in range(4):
        await transport.send_request("svc.run", b"%d" % i, reply_to="", message_id=f"m{i}")
    from_a = await drain(a1) + await drain(a2)
    assert 4 == len(from_a)
    assert {b"0", b"1", b"2", b"3"} == set(from_a)
    assert [b"0", b"1", b"2", b"3"] == await drain(b1)
    assert [] == await drain(other)


@pytest.mark.anyio
async def test_round_robin_splits_requests_evenly(transport: MemoryTransport) -> None:
    """Within a group, successive requests alternate between the members."""
    m1 = await transport.serve("svc.run", group="g")
    m2 = await transport.serve("svc.run", group="g")
    for i in range(6):
        await transport.send_request("svc.run", b"%d" % i, reply_to="", message_id=f"m{i}")
    assert (3, 3) == (len(await drain(m1)), len(await drain(m2)))


@pytest.mark.anyio
async def test_request_delivery_carries_reply_to_and_message_id(
    transport: MemoryTransport,
) -> None:
    """The receiver gets the reply address and id even for a body it cannot parse.

    Requirements: TRN-001, TRN-008.
    """
    sub = await transport.serve("svc.run", group="g")
    inbox = await transport.open_inbox()
    await transport.send_request(
        "svc.run", b"\xff not json", reply_to=inbox.address, message_id="m-1"
    )
    delivery = await deliver(sub)
    assert (b"\xff not json", inbox.address, "m-1") == (
        delivery.body,
        delivery.reply_to,
        delivery.message_id,
    )


@pytest.mark.anyio
async def test_no_responders_raises_at_once(transport: MemoryTransport) -> None:
    """A request nobody serves fails with NO_RESPONDERS instead of waiting.

    Requirements: TRN-006.
    """
    await transport.serve("svc.other", group="g")
    with pytest.raises(TransportError) as info:
        await transport.send_request("svc.run", b"{}", reply_to="", message_id="m")
    assert ErrorCode.NO_RESPONDERS == info.value.code


@pytest.mark.anyio
async def test_inbox_receives_the_reply(transport: MemoryTransport) -> None:
    """A server answers to the request's reply_to and the requester's inbox gets it.

    Requirements: TRN-007.
    """
    served = await transport.serve("svc.echo", group="g")
    inbox = await transport.open_inbox()
    assert inbox.address.startswith("_INBOX.")
    await transport.send_request("svc.echo", b"ping", reply_to=inbox.address, message_id="m")
    request = await deliver(served)
    assert request.reply_to is not None
    await transport.send_reply(request.reply_to, b"pong:" + request.body)
    assert b"pong:ping" == (await deliver(inbox.subscription)).body


@pytest.mark.anyio
async def test_inboxes_are_unique(transport: MemoryTransport) -> None:
    """Every open_inbox gives a fresh address, and replies reach only their own inbox.

    Requirements: TRN-007.
    """
    inboxes = [await transport.open_inbox() for _ in range(50)]
    assert 50 == len({i.address for i in inboxes})
    await transport.send_reply(inboxes[7].address, b"seven")
    assert [b"seven"] == await drain(inboxes[7].subscription)
    assert [] == await drain(inboxes[8].subscription)


@pytest.mark.anyio
async def test_reply_to_a_closed_or_unknown_inbox_is_counted(transport: MemoryTransport) -> None:
    """Replies are best effort: one nobody can receive is dropped and counted, not raised.

    Requirements: TRN-020.
    """
    inbox = await transport.open_inbox()
    await inbox.subscription.aclose()
    await transport.send_reply(inbox.address, b"late")
    await transport.send_reply("_INBOX.never", b"lost")
    assert 2 == transport.broker.stats.undeliverable


@pytest.mark.anyio
async def test_cancel_reaches_every_matching_instance(transport: MemoryTransport) -> None:
    """A cancel is broadcast to every matching serve_cancels subscription, without groups.

    Requirements: TRN-009.
    """
    first = await transport.serve_cancels("svc.run")
    second = await transport.serve_cancels("svc.>")
    unrelated = await transport.serve_cancels("other.run")
    await transport.publish_cancel("svc.run", b"stop")
    assert [b"stop"] == await drain(first)
    assert [b"stop"] == await drain(second)
    assert [] == await drain(unrelated)


@pytest.mark.anyio
async def test_cancel_and_event_without_subscribers_are_fine(transport: MemoryTransport) -> None:
    """Cancels and events are fire-and-forget: zero subscribers is not an error.

    Requirements: TRN-010.
    """
    await transport.publish_cancel("svc.run", b"stop")
    await transport.publish_event("news.today", b"{}")
    assert BrokerStats() == transport.broker.stats


@pytest.mark.anyio
async def test_events_fan_out_to_each_group_once(transport: MemoryTransport) -> None:
    """Each ungrouped subscriber gets every event; each group gets it once.

    Requirements: TRN-010.
    """
    solo1 = await transport.subscribe_events("news.>")
    solo2 = await transport.subscribe_events("news.sport")
    g1 = await transport.subscribe_events("news.sport", group="archive")
    g2 = await transport.subscribe_events("news.*", group="archive")
    await transport.publish_event("news.sport", b"1")
    await transport.publish_event("news.sport", b"2")
    assert [b"1", b"2"] == await drain(solo1)
    assert [b"1", b"2"] == await drain(solo2)
    grouped = await drain(g1) + await drain(g2)
    assert [b"1", b"2"] == sorted(grouped)


@pytest.mark.anyio
async def test_event_group_member_must_match(transport: MemoryTransport) -> None:
    """A group member whose pattern does not match never gets the group's share.

    Requirements: TRN-010.
    """
    narrow = await transport.subscribe_events("news.sport", group="g")
    wide = await transport.subscribe_events("news.*", group="g")
    for _ in range(4):
        await transport.publish_event("news.weather", b"w")
    assert ([], 4) == (await drain(narrow), len(await drain(wide)))


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("*.b", "x.b", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.b.d", False),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
    ],
)
@pytest.mark.anyio
async def test_wildcards(
    transport: MemoryTransport, pattern: str, name: str, expected: bool
) -> None:
    """``*`` matches exactly one token and ``>`` one or more trailing tokens.

    Requirements: TRN-004.
    """
    sub = await transport.subscribe_events(pattern)
    await transport.publish_event(name, b"e")
    assert expected == (await drain(sub) == [b"e"])


@pytest.mark.anyio
async def test_bodies_are_copied_bytes(transport: MemoryTransport) -> None:
    """Receivers get bytes the publisher can no longer change.

    Requirements: TRN-001.
    """
    sub = await transport.subscribe_events("a.b")
    body = bytearray(b"original")
    await transport.publish_event("a.b", body)  # type: ignore[arg-type]
    body[:] = b"mutated!"
    delivery = await deliver(sub)
    assert (bytes, b"original") == (type(delivery.body), delivery.body)


@pytest.mark.anyio
async def test_closing_a_subscription_ends_iteration_and_counts_drops(
    transport: MemoryTransport,
) -> None:
    """aclose ends a running iteration; deliveries never taken are counted as dropped.

    Requirements: TRN-020.
    """
    waiting = await transport.subscribe_events("a.b")
    buffered = await transport.subscribe_events("c.d")
    await transport.publish_event("c.d", b"1")
    await transport.publish_event("c.d", b"2")
    ended = anyio.Event()

    async def iterate() -> None:
        async for _ in waiting:
            pass
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(iterate)
        await anyio.sleep(0.02)  # let the other tasks start waiting
        await waiting.aclose()
        with anyio.fail_after(WAIT):
            await ended.wait()
    await buffered.aclose()
    await transport.publish_event("c.d", b"3")
    assert 2 == transport.broker.stats.dropped_on_close


@pytest.mark.anyio
async def test_a_thousand_concurrent_requests_each_get_their_own_reply(
    transport: MemoryTransport,
) -> None:
    """1,000 requesters in flight at once each receive exactly their own answer."""
    answered: dict[int, bytes] = {}

    async def server(sub: Subscription) -> None:
        async for request in sub:
            assert request.reply_to is not None
            await transport.send_reply(request.reply_to, b"re:" + request.body)

    async def requester(i: int) -> None:
        inbox = await transport.open_inbox()
        await transport.send_request(
            "svc.echo", b"%d" % i, reply_to=inbox.address, message_id=f"m{i}"
        )
        answered[i] = (await deliver(inbox.subscription)).body
        await inbox.subscription.aclose()

    subs = [await transport.serve("svc.echo", group="echo") for _ in range(2)]
    with anyio.fail_after(8):
        async with anyio.create_task_group() as servers:
            for sub in subs:
                servers.start_soon(server, sub)
            async with anyio.create_task_group() as clients:
                for i in range(1000):
                    clients.start_soon(requester, i)
            servers.cancel_scope.cancel()
    assert {i: b"re:%d" % i for i in range(1000)} == answered


# -- work queues -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_enqueue_consume_ack(transport: MemoryTransport) -> None:
    """Jobs come out in order with delivery_count 1; an acked job is gone for good.

    Requirements: TRN-011, TRN-013, TRN-017.
    """
    for i in range(3):
        await transport.enqueue("work", b"%d" % i, message_id=f"m{i}")
    consumer = await transport.consume("work", options(lease_ms=50))
    jobs = [await job(consumer) for _ in range(3)]
    assert [(b"0", 1, None), (b"1", 1, None), (b"2", 1, None)] == [
        (j.body, j.delivery_count, j.reason) for j in jobs
    ]
    for j in jobs:
        await j.ack()
    assert await nothing(consumer, 0.15)  # past the lease: nothing comes back


@pytest.mark.anyio
async def test_competing_consumers_share_the_queue(transport: MemoryTransport) -> None:
    """Two consumers of one queue each take different jobs, never the same one.

    Requirements: TRN-013.
    """
    first = await transport.consume("work", options(prefetch=2))
    second = await transport.consume("work", options(prefetch=2))
    for i in range(4):
        await transport.enqueue("work", b"%d" % i, message_id=f"m{i}")
    bodies = [(await job(c)).body for c in (first, second, first, second)]
    assert [b"0", b"1", b"2", b"3"] == sorted(bodies)


@pytest.mark.anyio
async def test_prefetch_limit_is_honoured(transport: MemoryTransport) -> None:
    """A consumer holds at most ``prefetch`` unsettled jobs; settling one frees a slot.

    Requirements: TRN-014.
    """
    consumer = await transport.consume("work", options(prefetch=2))
    for i in range(3):
        await transport.enqueue("work", b"%d" % i, message_id=f"m{i}")
    held = [await job(consumer), await job(consumer)]
    assert await nothing(consumer)
    other = await transport.consume("work", options())
    assert b"2" == (await job(other)).body
    await transport.enqueue("work", b"3", message_id="m3")
    assert await nothing(consumer)
    await held[0].ack()
    assert b"3" == (await job(consumer)).body


@pytest.mark.anyio
async def test_nack_with_delay_redelivers_after_the_delay(transport: MemoryTransport) -> None:
    """nack(delay_ms) keeps the job away for the delay, then delivers it again.

    Requirements: TRN-016, TRN-017.
    """
    consumer = await transport.consume("work", options())
    await transport.enqueue("work", b"j", message_id="m")
    first = await job(consumer)
    start = time.monotonic()
    await first.nack(delay_ms=200)
    again = await job(consumer)
    elapsed = time.monotonic() - start
    assert (b"j", 2) == (again.body, again.delivery_count)
    assert 0.19 <= elapsed < WAIT


@pytest.mark.anyio
async def test_nack_without_delay_redelivers_at_once(transport: MemoryTransport) -> None:
    """A plain nack puts the job straight back for the next delivery.

    Requirements: TRN-013, TRN-017.
    """
    consumer = await transport.consume("work", options())
    await transport.enqueue("work", b"j", message_id="m")
    await (await job(consumer)).nack()
    assert 2 == (await job(consumer, timeout=1.0)).delivery_count


@pytest.mark.anyio
async def test_expired_lease_redelivers(transport: MemoryTransport) -> None:
    """A job neither settled nor extended within lease_ms is delivered again.

    Requirements: TRN-015, TRN-017.
    """
    consumer = await transport.consume("work", options(lease_ms=100))
    await transport.enqueue("work", b"j", message_id="m")
    start = time.monotonic()
    first = await job(consumer)
    again = await job(consumer)
    assert (1, 2) == (first.delivery_count, again.delivery_count)
    assert time.monotonic() - start >= 0.09
    assert 1 == transport.broker.stats.expired_leases


@pytest.mark.anyio
async def test_expired_lease_goes_to_any_consumer(transport: MemoryTransport) -> None:
    """The redelivery of an expired lease may go to another consumer of the queue."""
    holder = await transport.consume("work", options(prefetch=1, lease_ms=100))
    await transport.enqueue("work", b"j", message_id="m")
    await job(holder)
    rescuer = await transport.consume("work", options())
    assert 2 == (await job(rescuer)).delivery_count


@pytest.mark.anyio
async def test_extend_lease_prevents_redelivery(transport: MemoryTransport) -> None:
    """A worker that keeps extending its lease is never raced by a redelivery.

    Requirements: TRN-015.
    """
    worker = await transport.consume("work", options(lease_ms=150))
    rival = await transport.consume("work", options())
    await transport.enqueue("work", b"j", message_id="m")
    long_job = await job(worker)
    duplicate: list[Job] = []

    async def watch() -> None:
        async for j in rival:
            duplicate.append(j)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        for _ in range(6):  # 6 x 50 ms: twice the lease
            await anyio.sleep(0.05)
            await long_job.extend_lease()
        await long_job.ack()
        await anyio.sleep(0.2)
        tg.cancel_scope.cancel()
    assert ([], 0) == (duplicate, transport.broker.stats.expired_leases)


@pytest.mark.anyio
async def test_max_deliveries_then_dead_letter(transport: MemoryTransport) -> None:
    """After max_deliveries failed deliveries the job moves to the DLQ with that reason."""
    consumer = await transport.consume("work", options(max_deliveries=2))
    await transport.enqueue("work", b"poison", message_id="m")
    await (await job(consumer)).nack()
    await (await job(consumer)).nack()
    assert await nothing(consumer)
    dead = await job(await transport.dead_letters("work"))
    assert (b"poison", "max_deliveries", 1) == (dead.body, dead.reason, dead.delivery_count)
    assert 1 == transport.broker.stats.dead_lettered


@pytest.mark.anyio
async def test_expired_last_lease_dead_letters(transport: MemoryTransport) -> None:
    """A lease that runs out on the last allowed delivery dead-letters the job."""
    consumer = await transport.consume("work", options(lease_ms=50, max_deliveries=1))
    await transport.enqueue("work", b"slow", message_id="m")
    await job(consumer)
    dead = await job(await transport.dead_letters("work"))
    assert (b"slow", "max_deliveries") == (dead.body, dead.reason)
    assert await nothing(consumer)


@pytest.mark.anyio
async def test_terminate_dead_letters_at_once(transport: MemoryTransport) -> None:
    """terminate(reason) moves the job to the DLQ now, with ``terminated: <reason>``."""
    consumer = await transport.consume("work", options(max_deliveries=5))
    await transport.enqueue("work", b"bad", message_id="m")
    await (await job(consumer)).terminate(reason="schema mismatch")
    letters = await transport.dead_letters("work")
    dead = await job(letters)
    assert ("terminated: schema mismatch", b"bad") == (dead.reason, dead.body)
    await dead.ack()
    assert await nothing(letters)
    assert await nothing(consumer)


@pytest.mark.anyio
async def test_waiting_dead_letter_consumer_is_woken(transport: MemoryTransport) -> None:
    """A consumer already waiting on the DLQ gets a job the moment it is dead-lettered."""
    consumer = await transport.consume("work", options())
    letters = await transport.dead_letters("work")
    got: list[Job] = []

    async def wait_for_letter() -> None:
        got.append(await job(letters))

    await transport.enqueue("work", b"bad", message_id="m")
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_letter)
        await anyio.sleep(0.02)  # let the DLQ consumer start waiting
        await (await job(consumer)).terminate(reason="no")
    assert ["terminated: no"] == [j.reason for j in got]


@pytest.mark.anyio
async def test_enqueue_deduplicates_by_message_id(broker_name: str) -> None:
    """The same message_id inside the window is accepted once; after the window, again.

    Requirements: TRN-012.
    """
    async with MemoryTransport(broker_name, dedup_window_ms=100) as transport:
        await transport.enqueue("work", b"a", message_id="same")
        await transport.enqueue("work", b"a-again", message_id="same")
        await transport.enqueue("work", b"b", message_id="other")
        consumer = await transport.consume("work", options())
        bodies = [(await job(consumer)).body for _ in range(2)]
        assert await nothing(consumer)
        assert ([b"a", b"b"], 1) == (bodies, transport.broker.stats.duplicates)
        await anyio.sleep(0.12)
        await transport.enqueue("work", b"a-later", message_id="same")
        assert b"a-later" == (await job(consumer)).body


@pytest.mark.anyio
async def test_closing_a_consumer_returns_its_jobs_at_once(transport: MemoryTransport) -> None:
    """A closed (or crashed) worker's unsettled jobs go back now, not after the lease.

    Requirements: TRN-013.
    """
    crashed = await transport.consume("work", options(lease_ms=30_000))
    for i in range(2):
        await transport.enqueue("work", b"%d" % i, message_id=f"m{i}")
    await job(crashed)
    await job(crashed)
    await crashed.aclose()
    survivor = await transport.consume("work", options())
    again = [await job(survivor, timeout=1.0) for _ in range(2)]
    assert [(b"0", 2), (b"1", 2)] == [(j.body, j.delivery_count) for j in again]
    assert await nothing(await transport.dead_letters("work"))


@pytest.mark.anyio
async def test_closing_a_consumer_ends_its_iteration(transport: MemoryTransport) -> None:
    """A consumer waiting on an empty queue stops iterating when closed."""
    consumer = await transport.consume("work", options())
    ended = anyio.Event()

    async def iterate() -> None:
        async for _ in consumer:
            pass
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(iterate)
        await anyio.sleep(0.02)  # let the other tasks start waiting
        await consumer.aclose()
        with anyio.fail_after(WAIT):
            await ended.wait()


@pytest.mark.anyio
async def test_cancelled_wait_loses_no_job(transport: MemoryTransport) -> None:
    """Cancelling a consumer's wait takes nothing from the queue."""
    consumer = await transport.consume("work", options(prefetch=1))
    assert await nothing(consumer, 0.05)
    await transport.enqueue("work", b"j", message_id="m")
    assert (b"j", 1) == ((j := await job(consumer)).body, j.delivery_count)


@pytest.mark.anyio
async def test_stale_ack_after_redelivery_is_harmless(transport: MemoryTransport) -> None:
    """An ack of an expired delivery is a counted no-op and leaves the redelivery leased.

    Requirements: TRN-019.
    """
    slow = await transport.consume("work", options(lease_ms=150, prefetch=1))
    await transport.enqueue("work", b"j", message_id="m")
    stale = await job(slow)
    fast = await transport.consume("work", options())
    current = await job(fast)  # the redelivery, after the first lease ran out
    await stale.ack()
    await stale.nack()
    await stale.extend_lease()
    await current.ack()  # still leased: the stale settles did not touch it
    assert (2, 3) == (current.delivery_count, transport.broker.stats.stale_settles)
    await current.ack()  # settling twice is stale too
    assert 4 == transport.broker.stats.stale_settles
    assert await nothing(fast, 0.2)  # acked for good: no redelivery after its lease


@pytest.mark.anyio
async def test_nack_rejects_a_negative_delay(transport: MemoryTransport) -> None:
    """A negative nack delay is INVALID_PARAMS, and the job stays leased."""
    consumer = await transport.consume("work", options())
    await transport.enqueue("work", b"j", message_id="m")
    j = await job(consumer)
    with pytest.raises(TransportError) as info:
        await j.nack(delay_ms=-1)
    assert ErrorCode.INVALID_PARAMS == info.value.code
    await j.ack()
    assert 0 == transport.broker.stats.stale_settles


@pytest.mark.anyio
async def test_first_consumer_options_win(transport: MemoryTransport) -> None:
    """The queue keeps the first consumer's lease; a later consumer's lease is ignored."""
    first = await transport.consume("work", options(lease_ms=100))
    later = await transport.consume("work", options(lease_ms=60_000, prefetch=1))
    await transport.enqueue("work", b"j", message_id="m")
    await job(later)
    assert 2 == (await job(first)).delivery_count  # later's lease ran out after 100 ms
    await first.aclose()


# -- limits, validation, lifecycle ---------------------------------------------------------------


@pytest.mark.anyio
async def test_payload_limit(broker_name: str) -> None:
    """A body at the limit passes; one byte over fails loudly at every send operation.

    Requirements: TRN-011, TRN-024, TRN-025.
    """
    async with MemoryTransport(broker_name, max_payload=100) as transport:
        await transport.serve("svc.run", group="g")
        inbox = await transport.open_inbox()
        ok, big = b"x" * 100, b"x" * 101
        sends: list[Callable[[bytes], Awaitable[None]]] = [
            lambda b: transport.publish_event("e.v", b),
            lambda b: transport.publish_cancel("svc.run", b),
            lambda b: transport.send_request("svc.run", b, reply_to=inbox.address, message_id="m"),
            lambda b: transport.send_reply(inbox.address, b),
            lambda b: transport.enqueue("work", b, message_id=str(len(b))),
        ]
        codes: list[ErrorCode | str] = []
        for send in sends:
            await send(ok)
            with pytest.raises(TransportError) as info:
                await send(big)
            codes.append(info.value.code)
        assert [ErrorCode.PAYLOAD_TOO_LARGE] * 5 == codes
        assert 100 == transport.capabilities.max_payload


@pytest.mark.anyio
async def test_invalid_names_and_patterns(transport: MemoryTransport) -> None:
    """Malformed patterns, names, groups and queues are INVALID_PARAMS.

    Requirements: TRN-002, TRN-003.
    """
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: transport.serve("a.>.b", group="g"),
        lambda: transport.serve("a.b", group="bad group"),
        lambda: transport.subscribe_events("a..b"),
        lambda: transport.serve_cancels(""),
        lambda: transport.publish_event("a.*", b""),
        lambda: transport.publish_cancel("a.>", b""),
        lambda: transport.send_request("a b", b"", reply_to="", message_id="m"),
        lambda: transport.send_reply("not an address", b""),
        lambda: transport.enqueue("bad queue", b"", message_id="m"),
        lambda: transport.enqueue("work", b"", message_id=""),
        lambda: transport.consume("work.*", options()),
        lambda: transport.dead_letters("work.>"),
    ]
    codes = []
    for call in calls:
        with pytest.raises(TransportError) as info:
            await call()
        codes.append(info.value.code)
    assert [ErrorCode.INVALID_PARAMS] * len(calls) == codes


@pytest.mark.anyio
async def test_capabilities_and_name(broker_name: str) -> None:
    """The memory transport declares every capability and is named memory://<name>.

    Requirements: TRN-025.
    """
    transport = MemoryTransport(broker_name)
    caps = transport.capabilities
    assert f"memory://{broker_name}" == transport.name
    assert DEFAULT_MAX == caps.max_payload
    assert all(
        [
            caps.durable_queues,
            caps.delayed_nack,
            caps.lease_extension,
            caps.dead_letters,
            caps.wildcards,
            caps.groups,
            caps.no_responders,
        ]
    )


DEFAULT_MAX = 1_048_576 + 65_536


@pytest.mark.anyio
async def test_operations_outside_the_context_are_unavailable(broker_name: str) -> None:
    """Before __aenter__ and after __aexit__ every operation raises UNAVAILABLE.

    Requirements: TRN-002.
    """
    transport = MemoryTransport(broker_name)
    with pytest.raises(TransportError) as before:
        await transport.publish_event("a.b", b"")
    async with transport:
        pass
    codes = [before.value.code]
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: transport.publish_event("a.b", b""),
        transport.open_inbox,
        lambda: transport.serve("a.b", group="g"),
        lambda: transport.enqueue("q", b"", message_id="m"),
        lambda: transport.consume("q", options()),
        transport.__aenter__,
    ]
    for call in calls:
        with pytest.raises(TransportError) as info:
            await call()
        codes.append(info.value.code)
    assert [ErrorCode.UNAVAILABLE] * 7 == codes


@pytest.mark.anyio
async def test_exit_ends_iterators_and_returns_jobs(broker_name: str) -> None:
    """Leaving the transport closes its subscriptions and consumers and requeues their jobs.

    Requirements: TRN-013, TRN-019.
    """
    async with MemoryTransport(broker_name) as keeper:
        ended: list[str] = []
        async with MemoryTransport(broker_name) as leaving:
            sub = await leaving.subscribe_events("a.b")
            consumer = await leaving.consume("work", options(prefetch=1))
            await keeper.enqueue("work", b"j", message_id="m")
            held = await job(consumer)

            async def iterate(name: str, source: Subscription | Consumer) -> None:
                async for _ in source:
                    pass
                ended.append(name)

            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(iterate, "sub", sub)
                    tg.start_soon(iterate, "consumer", consumer)
                    await anyio.sleep(0.02)  # let the other tasks start waiting
                    await leaving.__aexit__(None, None, None)
        assert ["consumer", "sub"] == sorted(ended)
        await held.ack()  # stale: the job went back when the transport closed
        other = await keeper.consume("work", options())
        assert (b"j", 2) == ((j := await job(other, timeout=1.0)).body, j.delivery_count)
        assert 1 == keeper.broker.stats.stale_settles


@pytest.mark.anyio
async def test_same_name_interoperates_other_names_are_isolated(broker_name: str) -> None:
    """Two transports on one broker name talk; a transport on another name hears nothing."""
    other_name = f"{broker_name}-other"
    try:
        async with (
            MemoryTransport(broker_name) as a,
            MemoryTransport(broker_name) as b,
            MemoryTransport(other_name) as c,
        ):
            heard_b = await b.subscribe_events("a.b")
            heard_c = await c.subscribe_events("a.b")
            await b.serve("svc.run", group="g")
            await a.publish_event("a.b", b"hello")
            assert [b"hello"] == await drain(heard_b)
            assert [] == await drain(heard_c)
            await a.send_request("svc.run", b"{}", reply_to="", message_id="m")
            with pytest.raises(TransportError) as info:
                await c.send_request("svc.run", b"{}", reply_to="", message_id="m")
            assert ErrorCode.NO_RESPONDERS == info.value.code
            await a.enqueue("work", b"j", message_id="m")
            assert b"j" == (await job(await b.consume("work", options()))).body
            assert await nothing(await c.consume("work", options()))
            assert a.broker is b.broker is MemoryBroker.named(broker_name)
            assert c.broker is not a.broker
    finally:
        MemoryBroker.reset(other_name)


@pytest.mark.anyio
async def test_reset_gives_a_fresh_broker(broker_name: str) -> None:
    """After reset, a new transport of that name sees none of the old state."""
    async with MemoryTransport(broker_name) as old:
        await old.enqueue("work", b"j", message_id="m")
    MemoryBroker.reset(broker_name)
    async with MemoryTransport(broker_name) as new:
        assert old.broker is not new.broker
        assert await nothing(await new.consume("work", options()))


def test_constructor_rejects_bad_arguments() -> None:
    """A malformed broker name or a non-positive limit is a ValueError."""
    for kwargs in [{"name": "a b"}, {"max_payload": 0}, {"dedup_window_ms": -1}]:
        with pytest.raises(ValueError, match=r"memory|max_payload"):
            MemoryTransport(**kwargs)  # type: ignore[arg-type]


# -- transport URLs --------------------------------------------------------------------------------


def test_open_memory_urls() -> None:
    """memory:// and memory://name open memory transports, with an optional max_payload."""
    default = open_transport("memory://")
    named = open_transport("memory://bench?max_payload=2048")
    assert isinstance(default, MemoryTransport)
    assert ("memory://default", DEFAULT_MAX) == (default.name, default.capabilities.max_payload)
    assert ("memory://bench", 2048) == (named.name, named.capabilities.max_payload)


def test_open_transport_is_a_transport() -> None:
    """What open_transport returns satisfies the Transport protocol (checked by mypy)."""
    transport: Transport = open_transport("memory://x")
    assert "memory://x" == transport.name


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        ("nats://localhost:4222?colour=blue", ErrorCode.INVALID_PARAMS, "colour"),
        ("tls://", ErrorCode.INVALID_PARAMS, "nats://host:port"),
        ("amqp://guest:secret@localhost/?prefetch=x", ErrorCode.INVALID_PARAMS, "AMQP URL"),
        ("http://example.com", ErrorCode.INVALID_PARAMS, "memory://"),
        ("memory://x?max_payload=big", ErrorCode.INVALID_PARAMS, "max_payload"),
        ("memory://x?max_payload=0", ErrorCode.INVALID_PARAMS, "max_payload"),
        ("memory://x?colour=blue", ErrorCode.INVALID_PARAMS, "colour"),
        ("memory://x/path", ErrorCode.INVALID_PARAMS, "memory://"),
        ("memory://a:b", ErrorCode.INVALID_PARAMS, "name"),
    ],
)
def test_open_transport_refusals(url: str, code: ErrorCode, words: str) -> None:
    assert "secret" not in words
    """Malformed broker URLs and unknown schemes or options are INVALID_PARAMS."""
    with pytest.raises(TransportError) as info:
        open_transport(url)
    assert (code, True) == (info.value.code, words in info.value.message)
