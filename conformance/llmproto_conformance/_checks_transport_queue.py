"""Transport-contract checks (spec/transport.md): work queues, leases and dead letters."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

import anyio

from llmproto_conformance._catalogue import check
from llmproto_conformance._context import CheckContext
from llmproto_conformance._model import CheckFailed, Level, Profile
from llmproto_conformance._transport_kit import (
    QUIET_S,
    SLACK_S,
    WAIT_S,
    Background,
    ack_job,
    expect_once,
    fresh_transports,
    name_prefix,
    transport_opener,
)
from llmproto_ref import (
    Job,
    QueueOptions,
)

__all__: tuple[str, ...] = ()


# -- work queues ------------------------------------------------------------------------------


@check(
    id="trn-enqueue-stored",
    requirement="TRN-011",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job enqueued is stored: a consumer on another connection gets it later",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_enqueue_stored(ctx: CheckContext) -> None:
    """Jobs enqueued on a connection that then closes are delivered to a later consumer."""
    p = name_prefix(ctx)
    sent = [f"job-{i}".encode() for i in range(3)]
    async with transport_opener(ctx)() as producer:
        for body in sent:
            await producer.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
    async with fresh_transports(ctx, 1) as (t,), Background() as bg:
        jobs = bg.tap(await t.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=5000)), ack_job)
        await jobs.wait(len(sent))
        await anyio.sleep(QUIET_S)
        expect_once(ctx, jobs.bodies(), sent, "jobs enqueued before their producer closed")


@check(
    id="trn-enqueue-dedup",
    requirement="TRN-012",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="an enqueue repeating a stored message_id succeeds and stores nothing",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_enqueue_dedup(ctx: CheckContext) -> None:
    """The same message id twice before delivery and once after the ack: one job."""
    p = name_prefix(ctx)
    first, second = ctx.unique("m"), ctx.unique("m")
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        await t1.enqueue(f"{p}.q", b"one", message_id=first)
        await t1.enqueue(f"{p}.q", b"one again", message_id=first)
        await t1.enqueue(f"{p}.q", b"two", message_id=second)
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=5000)), ack_job)
        await jobs.wait(2)
        await anyio.sleep(QUIET_S)
        expect_once(ctx, jobs.bodies(), [b"one", b"two"], "a queue given one message id twice")
        await t2.enqueue(f"{p}.q", b"one once more", message_id=first)
        await anyio.sleep(QUIET_S)
        ctx.expect(
            len(jobs.items) == 2,
            "an enqueue repeating an acknowledged job's message id stored a new job",
        )


@check(
    id="trn-one-consumer-at-a-time",
    requirement="TRN-013",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="competing consumers share a queue: each job is delivered to one of them, once",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_one_consumer_at_a_time(ctx: CheckContext) -> None:
    """Twenty jobs, two consumers that acknowledge: every job once, none to both."""
    p = name_prefix(ctx)
    sent = [f"job-{i}".encode() for i in range(20)]
    options = QueueOptions(prefetch=4, lease_ms=5000)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        taps = [bg.tap(await t.consume(f"{p}.q", options), ack_job) for t in (t1, t2)]
        for body in sent:
            await t1.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
        with anyio.move_on_after(WAIT_S):
            while sum(len(t.items) for t in taps) < len(sent):
                await anyio.sleep(0.005)
        await anyio.sleep(QUIET_S)
        expect_once(ctx, [b for t in taps for b in t.bodies()], sent, "two competing consumers")
        counts = sorted({job.delivery_count for t in taps for job in t.items})
        ctx.expect(counts == [1], f"jobs acknowledged at once came with delivery counts {counts}")


@check(
    id="trn-consumer-close-redelivers",
    requirement="TRN-013",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job whose consumer closed unsettled is delivered again, not lost",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_consumer_close_redelivers(ctx: CheckContext) -> None:
    """A consumer takes a job and closes; another consumer receives the same bytes."""
    p = name_prefix(ctx)
    options = QueueOptions(prefetch=1, lease_ms=300)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        first = await t1.consume(f"{p}.q", options)
        taken = bg.tap(first)
        await t2.enqueue(f"{p}.q", b"unsettled", message_id=ctx.unique("m"))
        ctx.expect(await taken.wait(1), "the job was never delivered")
        await first.aclose()
        again = bg.tap(await t2.consume(f"{p}.q", options), ack_job)
        ctx.expect(
            await again.wait(1, 0.3 + WAIT_S),
            "a job whose consumer closed without settling it was never delivered again",
        )
        ctx.expect(again.items[0].body == b"unsettled", "the redelivered job's bytes changed")


@check(
    id="trn-prefetch",
    requirement="TRN-014",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a consumer never holds more unsettled jobs than its prefetch",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_prefetch(ctx: CheckContext) -> None:
    """Five jobs waiting, prefetch 2: two arrive; one ack lets exactly one more in."""
    p = name_prefix(ctx)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        for n in range(5):
            await t1.enqueue(f"{p}.q", f"job-{n}".encode(), message_id=ctx.unique("m"))
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=2, lease_ms=10_000)))
        ctx.expect(await jobs.wait(2), f"only {len(jobs.items)} of 5 waiting jobs arrived")
        await anyio.sleep(QUIET_S)
        ctx.expect(
            len(jobs.items) == 2,
            f"a consumer with prefetch 2 holds {len(jobs.items)} unsettled jobs",
        )
        await jobs.items[0].ack()
        ctx.expect(await jobs.wait(3), "no job arrived after an ack freed a prefetch slot")
        await anyio.sleep(QUIET_S)
        ctx.expect(
            len(jobs.items) == 3,
            f"after one ack the consumer holds {len(jobs.items) - 1} unsettled jobs",
        )


@check(
    id="trn-lease-expiry",
    requirement="TRN-015",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job not settled or extended within its lease is delivered again, not sooner",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_lease_expiry(ctx: CheckContext) -> None:
    """Lease 200 ms: the unsettled job comes back after the lease; acked, it stays away."""
    p = name_prefix(ctx)
    lease_s = 0.2
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        options = QueueOptions(prefetch=4, lease_ms=round(lease_s * 1000))
        jobs = bg.tap(await t2.consume(f"{p}.q", options))
        await t1.enqueue(f"{p}.q", b"leased", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        ctx.expect(
            await jobs.wait(2, lease_s + WAIT_S),
            "a job whose lease ran out was never delivered again",
        )
        gap = jobs.times[1] - jobs.times[0]
        ctx.expect(
            gap >= lease_s - SLACK_S,
            f"delivered again after {gap * 1000:.0f} ms, within its 200 ms lease",
        )
        await jobs.items[1].ack()
        await anyio.sleep(lease_s + QUIET_S)
        ctx.expect(len(jobs.items) == 2, "a job was delivered again after its ack")


@check(
    id="trn-lease-extend",
    requirement="TRN-015",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="extend_lease restarts the lease: a job extended in time is not delivered again",
    needs=frozenset({"durable_queues", "lease_extension"}),
    adapter_only=True,
)
async def check_lease_extend(ctx: CheckContext) -> None:
    """Lease 200 ms, extended every 50 ms for 500 ms: one delivery only."""
    p = name_prefix(ctx)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=200)))
        await t1.enqueue(f"{p}.q", b"extended", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        for _ in range(10):
            await anyio.sleep(0.05)
            await jobs.items[0].extend_lease()
        ctx.expect(
            len(jobs.items) == 1, "a job whose lease was extended every 50 ms was delivered again"
        )
        await jobs.items[0].ack()
        await anyio.sleep(0.2 + QUIET_S)
        ctx.expect(len(jobs.items) == 1, "a job was delivered again after its ack")


@check(
    id="trn-delayed-nack",
    requirement="TRN-016",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="a job nacked with a delay is not delivered again before the delay has passed",
    needs=frozenset({"durable_queues", "delayed_nack"}),
    adapter_only=True,
)
async def check_delayed_nack(ctx: CheckContext) -> None:
    """nack(delay_ms=300): the redelivery comes no sooner than 300 ms later."""
    p = name_prefix(ctx)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        jobs = bg.tap(await t2.consume(f"{p}.q", QueueOptions(prefetch=4, lease_ms=10_000)))
        await t1.enqueue(f"{p}.q", b"delayed", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        nacked = time.monotonic()
        await jobs.items[0].nack(delay_ms=300)
        ctx.expect(await jobs.wait(2, 0.3 + WAIT_S), "a job nacked with a delay never came back")
        waited = jobs.times[1] - nacked
        ctx.expect(
            waited >= 0.3 - SLACK_S / 4,
            f"a job nacked with delay_ms=300 came back after {waited * 1000:.0f} ms",
        )
        await jobs.items[1].ack()


@check(
    id="trn-delivery-count",
    requirement="TRN-017",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="each job reports how often it has been delivered, starting at 1",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_delivery_count(ctx: CheckContext) -> None:
    """Nacked twice and then acked: delivery counts 1, 2, 3."""
    p = name_prefix(ctx)

    async def settle(job: Job) -> None:
        await (job.nack() if job.delivery_count < 3 else job.ack())

    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        options = QueueOptions(prefetch=4, lease_ms=10_000, max_deliveries=5)
        jobs = bg.tap(await t2.consume(f"{p}.q", options), settle)
        await t1.enqueue(f"{p}.q", b"counted", message_id=ctx.unique("m"))
        await jobs.wait(3)
        await anyio.sleep(QUIET_S)
        counts = [job.delivery_count for job in jobs.items]
        ctx.expect(counts == [1, 2, 3], f"a job nacked twice came with delivery counts {counts}")


@check(
    id="trn-dead-letter",
    requirement="TRN-018",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="terminated and exhausted jobs move to the dead-letter queue with their reason",
    needs=frozenset({"durable_queues", "dead_letters"}),
    adapter_only=True,
)
async def check_dead_letter(ctx: CheckContext) -> None:
    """max_deliveries 2: nacked twice, terminated, lease run out twice; each body and reason."""
    p = name_prefix(ctx)
    nacked, terminated, expired = b"nacked twice", b"terminated", b"lease ran out twice"

    async def settle(job: Job) -> None:
        if job.body == nacked:
            await job.nack()
        elif job.body == terminated:
            await job.terminate(reason="given up")

    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        options = QueueOptions(prefetch=4, lease_ms=150, max_deliveries=2)
        jobs = bg.tap(await t2.consume(f"{p}.q", options), settle)
        dead = bg.tap(await t1.dead_letters(f"{p}.q"), ack_job)
        for body in (nacked, terminated, expired):
            await t1.enqueue(f"{p}.q", body, message_id=ctx.unique("m"))
        await dead.wait(3, 0.3 + WAIT_S)
        await anyio.sleep(QUIET_S)
        expect_once(ctx, dead.bodies(), [nacked, terminated, expired], "the dead-letter queue")
        reasons = {job.body: job.reason for job in dead.items}
        for body, reason in (
            (nacked, "max_deliveries"),
            (terminated, "terminated: given up"),
            (expired, "max_deliveries"),
        ):
            ctx.expect(
                reasons[body] == reason,
                f"the job {body!r} was dead-lettered with reason {reasons[body]!r}, "
                f"expected {reason!r}",
            )
        deliveries = sorted(jobs.bodies())
        want = sorted([nacked, nacked, terminated, expired, expired])
        ctx.expect(deliveries == want, f"the queue delivered {deliveries}, expected {want}")


@check(
    id="trn-stale-settle",
    requirement="TRN-019",
    level=Level.MUST,
    profile=Profile.TRANSPORT,
    description="settling a delivery no longer leased raises nothing and changes nothing",
    needs=frozenset({"durable_queues"}),
    adapter_only=True,
)
async def check_stale_settle(ctx: CheckContext) -> None:
    """Settled already, lease run out, consumer closed: ack, nack, terminate, extend are no-ops."""
    p = name_prefix(ctx)
    options = QueueOptions(prefetch=4, lease_ms=150, max_deliveries=10)
    async with fresh_transports(ctx, 2) as (t1, t2), Background() as bg:
        jobs = bg.tap(await t2.consume(f"{p}.q", options))
        dead = (
            bg.tap(await t1.dead_letters(f"{p}.q"), ack_job)
            if t1.capabilities.dead_letters
            else None
        )
        await t1.enqueue(f"{p}.q", b"acked", message_id=ctx.unique("m"))
        ctx.expect(await jobs.wait(1), "the job was never delivered")
        await jobs.items[0].ack()
        await _harmless(jobs.items[0], "that was acknowledged already")
        await t1.enqueue(f"{p}.q", b"lapsed", message_id=ctx.unique("m"))
        ctx.expect(
            await jobs.wait(3, 0.15 + WAIT_S), "a job whose lease ran out was never delivered again"
        )
        await _harmless(jobs.items[1], "whose lease ran out")
        ctx.expect(
            await jobs.wait(4, 0.15 + WAIT_S),
            "settling a lapsed delivery settled the job's next delivery as well",
        )
        await jobs.items[3].ack()
        closing = await t2.consume(f"{p}.closed", QueueOptions(prefetch=1, lease_ms=150))
        held = bg.tap(closing)
        await t1.enqueue(f"{p}.closed", b"orphan", message_id=ctx.unique("m"))
        ctx.expect(await held.wait(1), "the job was never delivered")
        await closing.aclose()
        await _harmless(held.items[0], "whose consumer closed")
        again = bg.tap(await t1.consume(f"{p}.closed", options), ack_job)
        ctx.expect(
            await again.wait(1, 0.15 + WAIT_S),
            "settling the delivery of a closed consumer removed the job",
        )
        await anyio.sleep(0.15 + QUIET_S)
        bodies = jobs.bodies()
        ctx.expect(
            bodies == [b"acked", b"lapsed", b"lapsed", b"lapsed"], f"the queue delivered {bodies}"
        )
        if dead is not None:
            ctx.expect(not dead.items, f"stale settles dead-lettered {dead.bodies()}")


async def _harmless(job: Job, when: str) -> None:
    operations: dict[str, Callable[[], Awaitable[None]]] = {
        "ack": job.ack,
        "nack": functools.partial(job.nack, delay_ms=0),
        "terminate": functools.partial(job.terminate, reason="stale"),
        "extend_lease": job.extend_lease,
    }
    for name, operation in operations.items():
        try:
            await operation()
        except Exception as exc:  # raising at all is the finding
            raise CheckFailed(
                f"{name}() of a delivery {when} raised {type(exc).__name__}: {exc}"
            ) from exc
